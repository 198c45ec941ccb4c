"""Test-time scaling estimators (vlx/evals/at_k.py) against brute force over
every k-subset of the samples."""

import itertools

import numpy as np
import pytest

from vlx.evals import at_k as tts


def _subsets(n, k):
  return list(itertools.combinations(range(n), k))


def test_pass_at_k_is_the_unbiased_estimator():
  rng = np.random.default_rng(0)
  for _ in range(20):
    n = int(rng.integers(1, 9))
    correct = rng.random(n) < 0.4
    for k in range(1, n + 1):
      brute = np.mean([any(correct[list(s)]) for s in _subsets(n, k)])
      assert tts.pass_at_k(n, int(correct.sum()), k) == pytest.approx(brute, abs=1e-12)
  assert tts.pass_at_k(1000, 1, 10) == pytest.approx(0.01)
  assert tts.pass_at_k(5, 0, 3) == 0.0 and tts.pass_at_k(5, 3, 3) == 1.0
  with pytest.raises(ValueError, match="k <= n"):
    tts.pass_at_k(4, 1, 5)


def test_best_of_k_is_exact_over_subsets():
  rng = np.random.default_rng(1)
  for _ in range(20):
    n = int(rng.integers(1, 9))
    correct = list(rng.random(n) < 0.5)
    scores = list(rng.integers(0, 4, n).astype(float))  # ties: broken by sample order
    for k in range(1, n + 1):
      brute = np.mean([correct[min(s, key=lambda i: (-scores[i], i))] for s in _subsets(n, k)])
      assert tts.best_of_k(correct, scores, k) == pytest.approx(brute, abs=1e-12)
  # k = 1 is the plain accuracy; k = n is the top-scored sample
  assert tts.best_of_k([1, 0, 0, 1], [0.1, 0.9, 0.2, 0.3], 1) == pytest.approx(0.5)
  assert tts.best_of_k([1, 0, 0, 1], [0.1, 0.9, 0.2, 0.3], 4) == 0.0


def test_majority_at_k_exact_and_sampled():
  answers = ["a", "b", "a", None, "c", "a", "b", "b", "a"]
  for k in (1, 2, 3, 5):
    brute = []
    for s in _subsets(len(answers), k):
      votes = [answers[i] for i in s]
      top = max(votes.count(v) for v in set(votes))
      winners = {v for v in votes if votes.count(v) == top}
      brute.append(("a" in winners) / len(winners))
    assert tts.majority_at_k(answers, "a", k) == pytest.approx(np.mean(brute), abs=1e-12)
    sampled = tts.majority_at_k(answers, "a", k, max_subsets=1)
    assert sampled in (0.0, 0.5, 1.0 / 3, 1.0)
    approx = tts.majority_at_k(answers, "a", k, max_subsets=min(20_000, len(brute) - 1) or 1)
    if len(brute) > 1000:
      assert approx == pytest.approx(np.mean(brute), abs=0.02)
  assert tts.majority_at_k(answers, "a", 1) == pytest.approx(4 / 9)


def test_curves_over_questions():
  qs = [{"correct": [True, False, False, False], "answers": ["2", "3", "3", "1"],
         "answer": "2", "scores": [-1.0, -2.0, -3.0, -4.0]},
        {"correct": [False, False, True, True], "answers": ["up", "left", "down", "down"],
         "answer": "down", "scores": [-0.5, -0.1, -2.0, -1.0]}]
  c = tts.curves(qs, [1, 2, 4])
  assert c["k"] == [1, 2, 4]
  assert c["pass@k"][0] == pytest.approx((0.25 + 0.5) / 2)
  assert c["pass@k"][-1] == 1.0
  assert c["best_of_k"][-1] == pytest.approx((1.0 + 0.0) / 2)
  assert c["majority@k"][-1] == pytest.approx((0.0 + 1.0) / 2)
  assert all(np.diff(c["pass@k"]) >= 0)
