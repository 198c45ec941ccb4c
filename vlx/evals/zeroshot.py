"""Zero-shot classification: class names in prompt templates, averaged per class (CLIP)."""

from __future__ import annotations

from typing import Optional

import numpy as np

from vlx import registry
from vlx.evals.common import EvalContext, SplitReader, embed

DEFAULT_TEMPLATES = ("a {}", "a large {}", "a picture of a large {}", "there is a large {}")


def accuracies(scores: np.ndarray, labels: np.ndarray, prefix: str = "") -> dict:
  """Top-1 and top-5 accuracy of `scores [N, C]` against `labels [N]`."""
  top5 = np.argsort(-scores, axis=-1)[:, :5]
  return {f"{prefix}top1": float(np.mean(scores.argmax(-1) == labels)),
          f"{prefix}top5": float(np.mean((top5 == labels[:, None]).any(-1)))}


def class_embeddings(ctx: EvalContext, params, class_names, templates, max_len):
  texts = [t.format(c) for c in class_names for t in templates]
  tokens = ctx.handle.tokenizer.encode(texts, max_len)
  emb = embed(ctx, params, "encode_text", tokens).reshape(len(class_names), len(templates), -1)
  emb = emb.mean(1)
  return emb / np.linalg.norm(emb, axis=-1, keepdims=True)


def embed_with_labels(reader: SplitReader, params):
  """(image embeddings, labels) of a split, streamed: one batch of images at a time."""
  parts = reader.map(lambda rows: (reader.embed(params, "encode_image", rows),
                                   [int(r.get("label", -1)) for r in rows]))
  return (np.concatenate([p[0] for p in parts]),
          np.asarray([y for p in parts for y in p[1]], np.int32))


@registry.EVALUATORS.register("zeroshot")
class ZeroShot:
  """Top-1/top-5 accuracy; with `attributes`, also accuracy per word of the class name
  (e.g. colour = word 0, shape = word 1 of 'red circle')."""

  def __init__(self, ctx: EvalContext, split: Optional[str] = None, templates=None,
               attributes=None, limit=None):
    if not ctx.handle.class_names:
      raise ValueError("zeroshot evaluator: the dataset has no class names")
    self.ctx = ctx
    self.templates = tuple(templates or ctx.handle.templates or DEFAULT_TEMPLATES)
    self.attributes = dict(attributes or {})
    self.reader = SplitReader(ctx, split or ctx.data_config.test_split, limit=limit)

  def __call__(self, params):
    ctx = self.ctx
    names = ctx.handle.class_names
    cls = class_embeddings(ctx, params, names, self.templates, ctx.data_config.max_len)
    img, labels = embed_with_labels(self.reader, params)
    scores = img @ cls.T
    pred = scores.argmax(-1)
    out = accuracies(scores, labels)
    for attr, word in self.attributes.items():
      words = np.array([n.split()[int(word)] for n in names])
      out[f"{attr}_acc"] = float(np.mean(words[pred] == words[labels]))
    if self.reader.skipped:
      out["skipped_records"] = self.reader.skipped
    return out
