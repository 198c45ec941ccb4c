"""Evaluators of the video QA model (vlx/families/video/qa.py): open-ended and multiple-choice
QA accuracy (`video_qa`) and temporal grounding R@1 at IoU 0.5 / 0.7 and mIoU
(`temporal_grounding`); the metrics are the pure functions below.

Both stream a split (default `config.data.test_split`) through the config's `pp_eval` in
record order with a seeded rng, one batch of videos at a time. `video_qa` asks each video
every one of its questions (the `video_qa` pp op with `index=i`, so question i of a record
tokenizes exactly as in training) and its multiple choice; accuracies are reported overall,
per kind of video (static / temporal) and per concept, since a time-blind model is capped on
the temporal ones (the choices hold the twin's description; the first question of a temporal
video asks about its time order).
"""

from __future__ import annotations

import collections
import functools
from typing import Dict, Optional, Sequence

import numpy as np

from vlx import registry
from vlx.data import pipeline
from vlx.evals.common import EvalContext, SplitReader, run_batched
from vlx.families.video.evals import shuffle_frames
from vlx.families.video.qa import decode_spans

IOU_THRESHOLDS = (0.5, 0.7)


# ---- Metrics -------------------------------------------------------------------------------


def accuracy(pred: np.ndarray, target: np.ndarray) -> float:
  """Share of predictions equal to their targets."""
  return float(np.mean(np.asarray(pred) == np.asarray(target)))


def grouped_accuracy(pred: np.ndarray, target: np.ndarray,
                     groups: Sequence[str]) -> Dict[str, float]:
  """`accuracy` within each group name (`<group>/accuracy`)."""
  rows = collections.defaultdict(list)
  for i, g in enumerate(groups):
    rows[str(g)].append(i)
  return {f"{g}/accuracy": accuracy(np.asarray(pred)[r], np.asarray(target)[r])
          for g, r in sorted(rows.items())}


def temporal_iou(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
  """IoU of spans [..., 2] = [t0, t1) (half-open, in frames or seconds)."""
  pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
  inter = np.clip(np.minimum(pred[..., 1], gt[..., 1]) - np.maximum(pred[..., 0], gt[..., 0]),
                  0, None)
  union = (pred[..., 1] - pred[..., 0]) + (gt[..., 1] - gt[..., 0]) - inter
  return inter / np.maximum(union, 1e-9)


def grounding_metrics(pred: np.ndarray, gt: np.ndarray,
                      thresholds: Sequence[float] = IOU_THRESHOLDS) -> Dict[str, float]:
  """R@1 at each IoU threshold (`r1_iou50`: the top span's IoU >= 0.5) and the mean IoU."""
  iou = temporal_iou(pred, gt)
  out = {f"r1_iou{round(100 * t)}": float(np.mean(iou >= t)) for t in thresholds}
  out["miou"] = float(iou.mean())
  return out


# ---- Evaluators ----------------------------------------------------------------------------


def _video_keys(rows) -> list:
  """The video and, where the records have one (padded real clips), its frame mask."""
  return ["video"] + (["frame_mask"] if "frame_mask" in rows[0] else [])


class _VideoEval:
  """A split streamed through `model.__call__` on the fields each evaluator builds."""

  def __init__(self, ctx: EvalContext, split: Optional[str], pp: Optional[str],
               limit: Optional[int], frame_shuffle: bool = False, seed: int = 0):
    self.ctx, self.frame_shuffle, self.seed = ctx, bool(frame_shuffle), int(seed)
    self.reader = SplitReader(ctx, split or ctx.data_config.test_split, pp=pp, limit=limit)

  def _run(self, params, inputs: Dict[str, np.ndarray], index: Sequence[int]):
    if self.frame_shuffle:
      inputs = dict(inputs, video=shuffle_frames(inputs["video"], index, self.seed))
    model = self.ctx.model
    return run_batched(self.ctx, ("video_qa", tuple(sorted(inputs))),
                       lambda p, b: model.apply({"params": p}, b, train=False), params, inputs,
                       batch_size=self.reader.batch_size)

  @staticmethod
  def _meta(rows):
    return {"kind": [str(r.get("kind", "")) for r in rows],
            "concept": [str(r.get("concept", "")) for r in rows],
            "index": [int(r["_index"]) for r in rows]}


@registry.EVALUATORS.register("video_qa")
class VideoQAEval(_VideoEval):
  """Open-ended accuracy over every question of every video (`open/...`: overall, per
  question slot `q<i>`, per kind and per concept) and multiple-choice accuracy (`mc/...`:
  overall, per kind and concept). `frame_shuffle=True` permutes each video's frames first
  (the probe: what a model loses there it read from the frame order)."""

  def __init__(self, ctx: EvalContext, split: Optional[str] = None, pp: Optional[str] = None,
               limit: Optional[int] = None, frame_shuffle: bool = False, seed: int = 0):
    super().__init__(ctx, split, pp, limit, frame_shuffle, seed)
    max_len = int(ctx.data_config.max_len)
    # `ask(index=i)`: question i of a record (the dataset sets how many, not this evaluator).
    self.ask = functools.partial(registry.PP_OPS.get("video_qa"), ctx.handle, max_len)
    self.choice = registry.PP_OPS.get("video_choice")(ctx.handle, max_len)

  def __call__(self, params) -> Dict[str, float]:
    def batch(rows):
      asked = [[self.ask(index=i)(dict(r), None) for i in range(len(r["questions"]))]
               for r in rows]
      if len({len(a) for a in asked}) != 1:
        raise ValueError("video_qa: every video of a split must have as many questions")
      rows = [self.choice(dict(r), None) for r in rows]
      inputs = {**pipeline.stack(rows, _video_keys(rows)),
                "question": np.stack([[q["question"] for q in a] for a in asked]),
                "choices": np.stack([r["choices"] for r in rows])}
      out = self._run(params, inputs, [r["_index"] for r in rows])
      return (out["vqa_logits"].argmax(-1), np.array([[q["answer"] for q in a] for a in asked]),
              out["choice_logits"].argmax(-1), np.array([r["choice_target"] for r in rows]),
              self._meta(rows))

    parts = self.reader.map(batch)
    pred, answer, pick, target = (np.concatenate([p[i] for p in parts]) for i in range(4))
    meta = {k: [v for p in parts for v in p[4][k]] for k in ("kind", "concept")}
    num_q = pred.shape[1]
    out = {"open/accuracy": accuracy(pred, answer), "mc/accuracy": accuracy(pick, target),
           "num_videos": len(pred), "num_questions": int(pred.size)}
    for i in range(num_q):
      out[f"open/q{i}/accuracy"] = accuracy(pred[:, i], answer[:, i])
    for key in ("kind", "concept"):
      per_q = [g for g in meta[key] for _ in range(num_q)]
      out.update({f"open/{k}": v for k, v in grouped_accuracy(
          pred.reshape(-1), answer.reshape(-1), per_q).items()})
      out.update({f"mc/{k}": v for k, v in grouped_accuracy(pick, target, meta[key]).items()})
    if self.reader.skipped:
      out["skipped_records"] = self.reader.skipped
    return out


@registry.EVALUATORS.register("temporal_grounding")
class TemporalGrounding(_VideoEval):
  """Each video's grounding query: the decoded best span [t0, t1) against the annotated one,
  R@1 at IoU 0.5 and 0.7 and mIoU, overall and per kind and concept; `whole_video/...` is
  what predicting the whole video for every query scores."""

  def __init__(self, ctx: EvalContext, split: Optional[str] = None, pp: Optional[str] = None,
               limit: Optional[int] = None):
    super().__init__(ctx, split, pp, limit)
    self.span = registry.PP_OPS.get("video_span")(ctx.handle, int(ctx.data_config.max_len))

  def __call__(self, params) -> Dict[str, float]:
    def batch(rows):
      rows = [self.span(dict(r), None) for r in rows]
      inputs = pipeline.stack(rows, _video_keys(rows) + ["query"])
      logits = self._run(params, inputs, [r["_index"] for r in rows])["span_logits"]
      pred = np.asarray(decode_spans(logits, inputs.get("frame_mask")))
      return (pred, np.stack([r["span"] for r in rows]), self._meta(rows),
              inputs["video"].shape[1])

    parts = self.reader.map(batch)
    pred, gt = (np.concatenate([p[i] for p in parts]) for i in range(2))
    out = {**grounding_metrics(pred, gt), "num_queries": len(pred)}
    # The blind baseline: the whole video for every query (on the synthetic videos most
    # events are long, so it clears IoU 0.5 often; IoU 0.7 and mIoU tell more).
    whole = np.stack([np.zeros(len(gt)), np.full(len(gt), parts[0][3])], -1)
    out.update({f"whole_video/{k}": v for k, v in grounding_metrics(whole, gt).items()})
    for key in ("kind", "concept"):
      groups = collections.defaultdict(list)
      for i, g in enumerate(v for p in parts for v in p[2][key]):
        groups[g].append(i)
      for g, rows in sorted(groups.items()):
        out.update({f"{g}/{k}": v for k, v in grounding_metrics(pred[rows], gt[rows]).items()})
    if self.reader.skipped:
      out["skipped_records"] = self.reader.skipped
    return out
