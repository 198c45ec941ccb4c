"""Evaluators of the fusion encoders: VQA accuracy, grounding accuracy@IoU 0.5, and
retrieval where ITC proposes the top-k and ITM re-ranks them (ALBEF's protocol).

Each streams a split (default `config.data.test_split`) through its own preprocessing (`pp`,
default `config.data.pp_eval`) with a seeded rng, so every evaluation asks the same questions
about the same images; the host holds one batch of images at a time.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import jax
import numpy as np

from vlx import registry
from vlx.data import pipeline, scene_qa
from vlx.evals.common import EvalContext, SplitReader, contrastive_scale, run_batched
from vlx.evals.vqa_metrics import accuracy_by_type

_VISUAL_KEYS = ("image", "boxes", "box_mask", "tags")


def box_iou(a, b):
  """IoU of [..., 4] boxes (y0, x0, y1, x1)."""
  inter = (np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
           * np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None))
  area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])  # noqa: E731
  return inter / np.maximum(area(a) + area(b) - inter, 1e-9)


class _FusionEval:
  keys: Sequence[str] = ()
  needs_boxes = False

  def __init__(self, ctx: EvalContext, split: Optional[str] = None, pp: Optional[str] = None,
               limit: Optional[int] = 512):
    self.ctx = ctx
    have_tags = bool(getattr(ctx.model, "use_tags", False))
    keys = [k for k in self.keys if k != "tags" or have_tags]
    if getattr(ctx.model, "visual", "regions") == "patches" and not self.needs_boxes:
      keys = [k for k in keys if k not in ("boxes", "box_mask")]  # e.g. VQA v2 has none
    self.fields = keys
    self.input_keys = [k for k in keys if not k.endswith("_string")
                       and k not in ("answer_scores", "target_box", "target", "answer")]
    # Read with one rng seeded 0, in record order: the same questions every evaluation.
    self.reader = SplitReader(ctx, split or ctx.data_config.test_split, pp=pp, limit=limit)

  def _run(self, params, method, inputs):
    model = self.ctx.model
    return run_batched(self.ctx, ("fusion", method, tuple(sorted(inputs))),
                       lambda p, b: model.apply({"params": p}, b, method=method), params,
                       inputs, batch_size=self.reader.batch_size)

  def _stream(self, params, method: str, inputs: Sequence[str]):
    """Streams the split through `model.<method>` on the fields `inputs` -> (outputs of every
    example, every field of `self.fields` stacked). One batch of images at a time."""
    def run(rows):
      data = pipeline.stack(rows, self.fields)
      return (self._run(params, method, {k: data[k] for k in inputs}),
              {k: v for k, v in data.items() if k != "image"})  # small fields only
    outs, kept = zip(*self.reader.map(run))
    join = lambda *xs: np.concatenate(xs)  # noqa: E731
    return jax.tree.map(join, *outs), {k: join(*[d[k] for d in kept]) for k in kept[0]}


@registry.EVALUATORS.register("vqa")
class VQA(_FusionEval):
  """VQA soft-score accuracy over the split's questions, overall and per question type."""
  keys = _VISUAL_KEYS + ("question", "answer_scores", "question_string")

  def __call__(self, params) -> Dict[str, float]:
    logits, data = self._stream(params, "vqa_logits", self.input_keys)
    pred = logits.argmax(-1)
    scores = data["answer_scores"]
    types = [scene_qa.classify_question(str(q)) for q in data["question_string"]]
    return {**accuracy_by_type(pred, scores, types), "num_questions": len(pred)}


@registry.EVALUATORS.register("grounding")
class Grounding(_FusionEval):
  """Referring expressions: the highest-scoring valid candidate box is correct when its IoU
  with the annotated box is at least 0.5 (RefCOCO's accuracy@0.5)."""
  keys = _VISUAL_KEYS + ("expression", "target", "target_box")
  needs_boxes = True

  def __call__(self, params) -> Dict[str, float]:
    logits, data = self._stream(params, "refer_logits", self.input_keys)
    logits = np.where(data["box_mask"], logits, -np.inf)
    pick = logits.argmax(-1)
    boxes = data["boxes"][np.arange(len(pick)), pick]
    iou = box_iou(boxes, data["target_box"])
    return {"accuracy_iou50": float(np.mean(iou >= 0.5)),
            "selection_accuracy": float(np.mean(pick == data["target"])),
            "num_expressions": len(pick)}


def recall_at_1(sims: np.ndarray, same: np.ndarray) -> float:
  """sims [Q, C]; same [Q, C] marks the candidates that count as correct for each query."""
  return float(np.mean(same[np.arange(len(sims)), sims.argmax(1)]))


@registry.EVALUATORS.register("itm_retrieval")
class ITMRetrieval(_FusionEval):
  """Image<->text retrieval R@1, ITC alone and with ITM re-ranking ITC's top `k` (by ITM
  alone, `_itm`, and by ITM's log-odds plus ITC's logit, `_itm_itc`).

  One caption per image; a retrieved caption (image) counts as correct when its text equals
  the query's own caption (the synthetic scenes repeat some captions exactly)."""
  keys = _VISUAL_KEYS + ("text",)

  def __init__(self, ctx: EvalContext, split: Optional[str] = None, pp: Optional[str] = None,
               limit: Optional[int] = 256, k: int = 8):
    super().__init__(ctx, split, pp, limit)
    self.k = k

  def __call__(self, params) -> Dict[str, float]:
    model = self.ctx.model
    vis, data = self._stream(params, "visual_state",
                             [k for k in self.input_keys if k != "text"])
    text = data["text"]
    n = len(text)
    txt_inputs = {"text": text}   # the caption alone (OSCAR's tags belong to the image)
    txt = run_batched(self.ctx, ("fusion", "text_embedding", tuple(sorted(txt_inputs))),
                      lambda p, b: model.apply({"params": p}, b, method="text_embedding"),
                      params, txt_inputs)
    sims = vis["img_emb"] @ txt.T                                       # [images, texts]
    same = np.all(text[:, None, :] == text[None, :, :], axis=-1)         # caption text equal
    k = min(self.k, n)

    top_t = np.argsort(-sims, axis=1)[:, :k]      # ITC's top-k texts for each image
    top_i = np.argsort(-sims.T, axis=1)[:, :k]    # and images for each text
    img_idx = np.concatenate([np.repeat(np.arange(n), k), top_i.reshape(-1)])
    txt_idx = np.concatenate([top_t.reshape(-1), np.repeat(np.arange(n), k)])
    pairs = {key: vis[key][img_idx] for key in ("v_emb", "v_uni", "v_mask")}
    pairs["text"] = text[txt_idx]
    if "tags" in self.input_keys:
      pairs["tags"] = data["tags"][img_idx]
    scores = run_batched(self.ctx, ("fusion", "itm_scores", tuple(sorted(pairs))),
                         lambda p, b: model.apply({"params": p}, b, method="itm_scores"),
                         params, pairs)
    # Two re-rankings of ITC's top k: by the ITM match probability alone (ALBEF), and by
    # ITM's log-odds plus ITC's logit (BLIP adds the two scores): a product of the two
    # models' odds, so ITC's ranking breaks the ties that ITM is unsure about.
    itm_t, itm_i = scores[:n * k].reshape(n, k), scores[n * k:].reshape(n, k)
    scale = contrastive_scale(params)
    log_odds = lambda p: np.log(np.clip(p, 1e-7, 1)) - np.log(np.clip(1 - p, 1e-7, 1))  # noqa: E731
    rows = np.arange(n)
    out = {"i2t_r1_itc": recall_at_1(sims, same), "t2i_r1_itc": recall_at_1(sims.T, same.T)}
    for name, i2t, t2i in (
        ("itm", itm_t, itm_i),
        ("itm_itc", log_odds(itm_t) + scale * np.take_along_axis(sims, top_t, 1),
         log_odds(itm_i) + scale * np.take_along_axis(sims.T, top_i, 1))):
      out[f"i2t_r1_{name}"] = float(np.mean(same[rows, top_t[rows, i2t.argmax(1)]]))
      out[f"t2i_r1_{name}"] = float(np.mean(same[top_i[rows, t2i.argmax(1)], rows]))
    return {**out, "duplicate_caption_frac": float(np.mean(same.sum(1) > 1)), "num_images": n,
            "k": k}
