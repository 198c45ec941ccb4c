"""`reasoning_qa`: the video-language model answers the held-out reasoning questions and the
verifiers score what it writes: accuracy overall and per question kind, the span questions'
mean temporal IoU, the share of responses in the full `<think>...</think><answer>...</answer>`
format, and the mean response length. Greedy by default; `method="sample"` scores one sample.

Baselines of the same model on the same questions (`frames`): "blank" (every frame black:
what the question alone gives) and "shuffled" (the frames in a random order per question:
what the model gets without time). Test-time scaling (`num_samples` = n > 1): n sampled
responses per question, scored as pass@k, majority@k and best-of-k by the model's own
likelihood for k = 1, 2, 4, ..., n (unbiased estimates, vlx/evals/at_k.py). More (or
fewer) frames at test time: `split="test_<R>f"` reads the same questions with each clip at R
frames (reasoning_data.py); the answers still count in the clip's 8 frames
(`reasoning_videos.CLIP_FRAMES`), and the model marks each frame by its time in the clip
(`model.clip_frames`).
"""

from __future__ import annotations

from typing import Dict, Optional

import jax
import numpy as np

from vlx import decode as decode_lib
from vlx import registry
from vlx.data import pipeline
from vlx.data.pp_ops import to_str
from vlx.evals import at_k
from vlx.evals.common import EvalContext, SplitReader, run_batched
from vlx.families.unified import generate as gen
from vlx.families.video_lmm import reasoning_videos as RV
from vlx.families.video_lmm import tasks as T
from vlx.families.video_lmm import verifiers as VF

_PROMPT = ("video", "prompt", "prompt_mask", "prompt_ar")
_TRUTH = ("kind", "question", "answer", "thought", "options", "span")
FRAMES = ("ordered", "blank", "shuffled")


def examples_of(truth, num_frames: int):
  """Stacked truth fields -> the verifiers' Examples (no frames)."""
  out = []
  for i in range(len(truth["kind"])):
    kind = to_str(truth["kind"][i])
    options = tuple(o for o in (to_str(x) for x in truth["options"][i]) if o)
    span = tuple(int(x) for x in truth["span"][i])
    out.append(RV.Example(frames=np.zeros((0,), np.uint8), kind=kind,
                          question=to_str(truth["question"][i]),
                          answer=to_str(truth["answer"][i]),
                          thought=to_str(truth["thought"][i]), num_frames=num_frames,
                          options=options, span=span if kind == "span" else None))
  return out


def score_responses(responses, examples) -> Dict[str, float]:
  """The verifiers over one response per example."""
  acc = np.array([VF.accuracy(r, e) for r, e in zip(responses, examples)])
  fmt = np.array([VF.format_ok(r) for r, e in zip(responses, examples)])
  kinds = np.array([e.kind for e in examples])
  out = {"accuracy": float(acc.mean()), "format_rate": float(fmt.mean()),
         "num_questions": len(examples)}
  for kind in RV.KINDS:
    if (kinds == kind).any():
      out[f"accuracy_{kind}"] = float(acc[kinds == kind].mean())
  spans = [VF.temporal_iou(r, e) for r, e in zip(responses, examples) if e.kind == "span"]
  if spans:
    out["span_miou"] = float(np.mean(spans))
  return out


@registry.EVALUATORS.register("reasoning_qa")
class ReasoningQA:
  """Generates a response to every question of the split and verifies it."""

  def __init__(self, ctx: EvalContext, prompt_len: int, target_len: int, text_size: int = 256,
               response: str = "cot", split: Optional[str] = None, limit: Optional[int] = 512,
               method: str = "greedy", temperature: float = 1.0, seed: int = 0,
               frames: str = "ordered", num_samples: int = 1, words: str = "vlx",
               vocab_size: Optional[int] = None,
               video_pp: str = "video_value_range(-1,1)"):
    if frames not in FRAMES:
      raise ValueError(f"reasoning_qa: frames {frames!r}; known: {', '.join(FRAMES)}")
    if num_samples < 1:
      raise ValueError("reasoning_qa: num_samples must be >= 1")
    self.ctx = ctx
    self.frames, self.num_samples = frames, int(num_samples)
    # `words`, `vocab_size`, `video_pp`: an imported PaliGemma's (configs/video_lmm.py:ft=DIR)
    self.vocab = T.words_for(ctx.handle, text_size, words, vocab_size)
    self.text_size, self.eos = self.vocab.text_size, self.vocab.eos
    size = None if vocab_size is None else int(vocab_size)
    pp = (f"decode_video|{video_pp}|reasoning_qa({int(prompt_len)}, {int(target_len)}, "
          f"'{response}', {int(text_size)}, '{words}', {size})")
    self.reader = SplitReader(ctx, split or ctx.data_config.test_split, pp=pp, limit=limit)
    if self.num_samples > 1:
      method = "sample"
    self.cfg = decode_lib.DecodeConfig(method=method, max_len=int(target_len),
                                       temperature=float(temperature))
    self.seed = int(seed)
    # spans are answered in the clip's frames, however many frames the split reads it at
    self.clip_frames = RV.CLIP_FRAMES

  def _video(self, video, first_index: int):
    """The frames the model sees under `frames` (a fixed order per question)."""
    if self.frames == "blank":
      # black after value_range(-1, 1) and after a (0.5, 0.5) mean / std (PaliGemma's)
      return np.full_like(video, -1.0)
    if self.frames == "shuffled":
      out = video.copy()
      for i in range(len(video)):
        perm = np.random.default_rng([self.seed, first_index + i]).permutation(video.shape[1])
        out[i] = video[i, perm]
      return out
    return video

  def responses(self, params, draws: int = 1):
    """-> ([(response texts, ids [N, max_len], per-token log-probs [N, max_len])] one per draw,
    truth fields, frames per video). Each batch of the split is read once for all draws; the
    draw index travels in the batch (folded into the rng inside the one compiled program)."""
    fn = gen.make_generate_fn(self.ctx.model, self.cfg, self.eos, return_logp=True)
    base = jax.random.key(self.seed)
    key = ("reasoning_generate", self.cfg, self.seed, self.eos)

    def generate(p, b):
      return fn(p, *(b[k] for k in _PROMPT), jax.random.fold_in(base, b["draw"][0]))
    seen = [0]

    def run(rows):
      data = pipeline.stack(rows, list(_PROMPT) + list(_TRUTH))
      data["video"] = self._video(data["video"], seen[0])
      seen[0] += len(rows)
      inputs = {k: data[k] for k in _PROMPT}
      out = [run_batched(self.ctx, key, generate, params,
                         {**inputs, "draw": np.full((len(rows),), d, np.int32)},
                         batch_size=self.reader.batch_size) for d in range(draws)]
      return out, {k: data[k] for k in _TRUTH}, data["video"].shape[1]
    per_batch, truth, frames = zip(*self.reader.map(run))
    results = []
    for d in range(draws):
      ids = np.concatenate([b[d][0] for b in per_batch])
      logps = np.concatenate([b[d][1] for b in per_batch])
      text = self.ctx.handle.tokenizer.decode(np.where(ids < self.text_size, ids, 0))
      results.append((list(text), ids, logps))
    truth = {k: np.concatenate([t[k] for t in truth]) for k in _TRUTH}
    return results, truth, frames[0]

  def __call__(self, params) -> Dict[str, float]:
    draws, truth, _ = self.responses(params, self.num_samples)
    examples = examples_of(truth, self.clip_frames)
    text, ids, _ = draws[0]
    out = score_responses(text, examples)
    out["response_length"] = float(np.mean([
        (list(row) + [self.eos]).index(self.eos) for row in ids]))
    if self.num_samples > 1:
      out.update(self.scaling(examples, draws))
    return out

  def scaling(self, examples, draws) -> Dict[str, float]:
    """pass@k, majority@k and best-of-k (by the response's log-likelihood) from the
    `num_samples` sampled responses per question."""
    texts = [text for text, _, _ in draws]
    scores = [logps.sum(1) for _, _, logps in draws]
    samples = []
    for i, ex in enumerate(examples):
      responses = [t[i] for t in texts]
      answers = [VF.parse(r).answer for r in responses]
      correct = [VF.accuracy(r, ex) == 1.0 for r in responses]
      # a vote is for an answer's meaning: a span's vote is its frames, a count's its number
      right = next((a for a, c in zip(answers, correct) if c), ex.answer)
      samples.append({"correct": correct, "scores": [float(sc[i]) for sc in scores],
                      "answers": [right if c else (a or None) for a, c in
                                  zip(answers, correct)],
                      "answer": right})
    ks = [k for k in (1, 2, 4, 8, 16, 32) if k <= self.num_samples]
    curves = at_k.curves(samples, ks)
    out = {}
    for j, k in enumerate(ks):
      # "@" is not a legal TensorBoard summary name: pass_at_k, as TensorBoard would rename it
      out[f"pass_at_{k}"] = curves["pass@k"][j]
      out[f"majority_at_{k}"] = curves["majority@k"][j]
      out[f"best_of_{k}_likelihood"] = curves["best_of_k"][j]
    return out
