"""Zero-shot video classification with multi-view averaging (`video_zeroshot`).

Each test video is read as V views (`clips` x `crops` from `decode_video_file`); every view
is embedded by the video tower, the V L2-normalised embeddings are averaged, and the mean is
scored against the class embeddings (class names in prompt templates, averaged per class:
`vlx.evals.zeroshot.class_embeddings`). Averaging the normalised embeddings is averaging the
cosine logits exactly (the score is linear in the embedding), so this is logit averaging;
the learned temperature would only rescale the logits, so softmax-probability averaging (the
supervised-classifier protocol) would weigh confident views more for no zero-shot reason.
Also reported: the mean single-view top-1 (`view_top1`), what the averaging gains over.

`dataset` scores another dataset than the run's (e.g. train on `msrvtt`, classify `ucf101`):
it is loaded with the run's tokenizer, so the prompts are tokenized as the model was trained.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from vlx import registry
from vlx.evals.common import EvalContext, SplitReader, run_batched
from vlx.evals.zeroshot import DEFAULT_TEMPLATES, accuracies, class_embeddings


def view_scores(view_emb: np.ndarray, class_emb: np.ndarray) -> np.ndarray:
  """`view_emb [N, V, D]` (unit rows), `class_emb [C, D]` -> scores [N, C] of the views'
  mean embedding: the mean of the views' cosine scores."""
  return view_emb.mean(axis=1) @ class_emb.T


@registry.EVALUATORS.register("video_zeroshot")
class VideoZeroShot:
  """Top-1/top-5 of the view-averaged scores, the mean single-view top-1, `num_views`.

  `pp`: the evaluation preprocessing (default `data.pp_eval`), whose `decode_video_file`
  sets the views, e.g. `decode_video_file(8, 32, 'uniform', 'test', 2, 3)` (2 clips x 3
  crops); one view is plain zero-shot. `dataset`: {'name': ..., 'source': {...}} to classify
  another dataset's `split` (module doc)."""

  def __init__(self, ctx: EvalContext, split: Optional[str] = None, pp: Optional[str] = None,
               templates=None, limit: Optional[int] = None, dataset=None):
    if dataset:
      dataset = dict(dataset)
      handle = registry.DATASETS.get(dataset["name"])(**dict(dataset.get("source", {})))
      handle.tokenizer = ctx.handle.tokenizer
      ctx = dataclasses.replace(ctx, handle=handle)
    if not ctx.handle.class_names:
      raise ValueError("video_zeroshot evaluator: the dataset has no class names")
    self.ctx = ctx
    self.templates = tuple(templates or ctx.handle.templates or DEFAULT_TEMPLATES)
    self.reader = SplitReader(ctx, split or ctx.data_config.test_split, pp=pp, limit=limit)

  def _embed_views(self, params, rows):
    """[B, V, D] unit embeddings of every view of a batch of videos."""
    video = np.stack([r["video"] for r in rows])
    mask = np.stack([r["frame_mask"] for r in rows]) if "frame_mask" in rows[0] else None
    if video.ndim == 5:  # one view: [B, T, H, W, 3]
      video = video[:, None]
      mask = None if mask is None else mask[:, None]
    b, v = video.shape[:2]
    x = {"video": video.reshape((b * v,) + video.shape[2:])}
    if mask is not None:
      x["frame_mask"] = mask.reshape(b * v, -1)
    model = self.ctx.model

    def fn(p, batch):
      return model.apply({"params": p}, batch["video"], batch.get("frame_mask"),
                         method="encode_video")
    emb = run_batched(self.ctx, ("encode_video", tuple(sorted(x))), fn, params, x,
                      batch_size=self.reader.batch_size * v)
    return np.asarray(emb, np.float32).reshape(b, v, -1)

  def __call__(self, params):
    ctx = self.ctx
    cls = class_embeddings(ctx, params, ctx.handle.class_names, self.templates,
                           ctx.data_config.max_len)
    parts = self.reader.map(lambda rows: (self._embed_views(params, rows),
                                          [int(r.get("label", -1)) for r in rows]))
    views = np.concatenate([p[0] for p in parts])
    labels = np.asarray([y for p in parts for y in p[1]], np.int64)
    out = accuracies(view_scores(views, cls), labels)
    single = [accuracies(views[:, k] @ cls.T, labels)["top1"] for k in range(views.shape[1])]
    out.update(view_top1=float(np.mean(single)), num_views=int(views.shape[1]),
               num_videos=int(len(labels)))
    if self.reader.skipped:
      out["skipped_records"] = self.reader.skipped
    return out
