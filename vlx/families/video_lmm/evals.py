"""`reasoning_qa`: the video-language model answers the held-out reasoning questions and the
verifiers score what it writes: accuracy overall and per question kind, the span questions'
mean temporal IoU, the share of responses in the full `<think>...</think><answer>...</answer>`
format, and the mean response length. Greedy by default; `method="sample"` scores one sample.
"""

from __future__ import annotations

from typing import Dict, Optional

import jax
import numpy as np

from vlx import decode as decode_lib
from vlx import registry
from vlx.data import pipeline
from vlx.data.pp_ops import to_str
from vlx.evals.common import EvalContext, SplitReader, run_batched
from vlx.families.unified import generate as gen
from vlx.families.video_lmm import reasoning_videos as RV
from vlx.families.video_lmm import verifiers as VF
from vlx.token_ids import EOS_ID

_PROMPT = ("video", "prompt", "prompt_mask", "prompt_ar")
_TRUTH = ("kind", "question", "answer", "thought", "options", "span")


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
               method: str = "greedy", temperature: float = 1.0, seed: int = 0):
    self.ctx = ctx
    self.text_size = int(text_size)
    pp = (f"decode_video|video_value_range(-1,1)|reasoning_qa({int(prompt_len)}, "
          f"{int(target_len)}, '{response}', {self.text_size})")
    self.reader = SplitReader(ctx, split or ctx.data_config.test_split, pp=pp, limit=limit)
    self.cfg = decode_lib.DecodeConfig(method=method, max_len=int(target_len),
                                       temperature=float(temperature))
    self.seed = int(seed)

  def responses(self, params):
    """-> (response texts, response ids [N, max_len], truth fields)."""
    fn = gen.make_generate_fn(self.ctx.model, self.cfg, EOS_ID)
    rng = jax.random.key(self.seed)
    key = ("reasoning_generate", self.cfg)

    def run(rows):
      data = pipeline.stack(rows, list(_PROMPT) + list(_TRUTH))
      ids = run_batched(self.ctx, key, lambda p, b: fn(p, *(b[k] for k in _PROMPT), rng),
                        params, {k: data[k] for k in _PROMPT},
                        batch_size=self.reader.batch_size)
      return ids, {k: data[k] for k in _TRUTH}, data["video"].shape[1]
    ids, truth, frames = zip(*self.reader.map(run))
    ids = np.concatenate(ids)
    truth = {k: np.concatenate([t[k] for t in truth]) for k in _TRUTH}
    text = self.ctx.handle.tokenizer.decode(np.where(ids < self.text_size, ids, 0))
    return list(text), ids, truth, frames[0]

  def __call__(self, params) -> Dict[str, float]:
    text, ids, truth, frames = self.responses(params)
    out = score_responses(text, examples_of(truth, frames))
    out["response_length"] = float(np.mean([
        (list(row) + [EOS_ID]).index(EOS_ID) for row in ids]))
    return out

