"""Test-time scaling from n sampled answers per question, as unbiased estimates over k <= n.

Given, per question, n samples with whether each is right, its answer (for voting) and a
score (the model's log-likelihood, for best-of-N), the expected accuracy of a policy that
draws k of them at random:

- `pass_at_k`: some sample among k is right (an oracle picks it: best-of-N by an oracle).
  The unbiased estimator 1 - C(n - c, k) / C(n, k) (Chen et al., 2021), not 1 - (1 - c/n)^k.
- `best_of_k`: the sample with the highest score among k is right. Exact: sorted by score,
  the i-th best (0-based) is the k-subset's best with probability C(n - 1 - i, k - 1) / C(n, k);
  ties in score are broken by sample order.
- `majority_at_k`: the most common answer among k is right (a tie shared evenly among the
  tied answers). Exact over every k-subset when there are at most `max_subsets`, else the
  mean over that many random subsets drawn with a fixed seed.

Every function takes one question's samples; `curves` averages over questions for k = 1..K.
"""

from __future__ import annotations

import collections
import itertools
import math
from typing import Dict, Hashable, Sequence

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
  """P(at least one of k samples drawn without replacement from n, c right, is right)."""
  if not 0 <= c <= n or not 1 <= k <= n:
    raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n (n={n}, c={c}, k={k})")
  if n - c < k:
    return 1.0
  # 1 - prod_{i = n - c + 1}^{n} (1 - k / i): stable for large n
  return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def best_of_k(correct: Sequence[bool], scores: Sequence[float], k: int) -> float:
  """Expected correctness of the highest-scoring of k random samples (exact)."""
  n = len(correct)
  if not 1 <= k <= n or len(scores) != n:
    raise ValueError(f"best-of-k needs 1 <= k <= n and a score per sample (n={n}, k={k})")
  order = sorted(range(n), key=lambda i: (-scores[i], i))
  total = math.comb(n, k)
  return sum(math.comb(n - 1 - rank, k - 1) for rank, i in enumerate(order)
             if correct[i]) / total


def _vote(answers, correct_answer) -> float:
  counts = collections.Counter(answers)
  top = max(counts.values())
  winners = [a for a, c in counts.items() if c == top]
  return float(correct_answer in winners) / len(winners)


def majority_at_k(answers: Sequence[Hashable], correct_answer: Hashable, k: int,
                  max_subsets: int = 20_000, seed: int = 0) -> float:
  """Expected correctness of a majority vote over k random samples. `answers` holds None for
  a sample with no parsable answer (it votes for nothing right)."""
  n = len(answers)
  if not 1 <= k <= n:
    raise ValueError(f"majority@k needs 1 <= k <= n (n={n}, k={k})")
  if math.comb(n, k) <= max_subsets:
    subsets = itertools.combinations(range(n), k)
    votes = [_vote([answers[i] for i in s], correct_answer) for s in subsets]
  else:
    rng = np.random.default_rng(seed)
    votes = [_vote([answers[i] for i in rng.choice(n, k, replace=False)], correct_answer)
             for _ in range(max_subsets)]
  return float(np.mean(votes))


def curves(samples: Sequence[Dict], ks: Sequence[int]) -> Dict[str, list]:
  """samples: per question {'correct': [n] bools, 'answers': [n], 'answer': the right one,
  'scores': [n] log-likelihoods} -> {'k', 'pass@k', 'majority@k', 'best_of_k'} averaged over
  questions, one value per k."""
  out = {"k": list(ks), "pass@k": [], "majority@k": [], "best_of_k": []}
  for k in ks:
    out["pass@k"].append(float(np.mean([pass_at_k(len(q["correct"]), int(sum(q["correct"])), k)
                                        for q in samples])))
    out["majority@k"].append(float(np.mean([majority_at_k(q["answers"], q["answer"], k)
                                            for q in samples])))
    out["best_of_k"].append(float(np.mean([best_of_k(q["correct"], q["scores"], k)
                                           for q in samples])))
  return out
