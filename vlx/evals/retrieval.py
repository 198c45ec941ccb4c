"""Image<->text retrieval recall@K against every reference caption (COCO/Flickr protocol)."""

from __future__ import annotations

import collections
from typing import Optional

import numpy as np

from vlx import registry
from vlx.evals.common import EvalContext, SplitReader, embed
from vlx.data import pipeline


def recall_at_k(img: np.ndarray, txt: np.ndarray, ks=(1, 5, 10)):
  """img [N, D], txt [N, K, D] (K captions per image) -> {i2t_rK, t2i_rK}."""
  n, k, d = txt.shape
  sims = img @ txt.reshape(n * k, d).T                       # [N, N*K]
  owner = np.repeat(np.arange(n), k)
  # i2t: rank of the best-ranked correct caption for each image.
  order = np.argsort(-sims, axis=1)
  correct = owner[order] == np.arange(n)[:, None]
  i2t_rank = correct.argmax(1)
  # t2i: rank of the caption's own image.
  order_t = np.argsort(-sims.T, axis=1)
  t2i_rank = (order_t == owner[:, None]).argmax(1)
  out = {}
  for kk in ks:
    out[f"i2t_r{kk}"] = float(np.mean(i2t_rank < kk))
    out[f"t2i_r{kk}"] = float(np.mean(t2i_rank < kk))
  return out


def duplicate_fraction(captions: np.ndarray) -> float:
  """Fraction of captions whose exact text belongs to more than one image."""
  owners = collections.defaultdict(set)
  for i, row in enumerate(captions):
    for c in row:
      owners[c].add(i)
  flat = [c for row in captions for c in row]
  return float(np.mean([len(owners[c]) > 1 for c in flat]))


@registry.EVALUATORS.register("retrieval")
class Retrieval:
  """Streams the test split (default `data.test_split`): image embeddings per batch, the
  captions kept as strings; then every caption is tokenized and embedded."""

  def __init__(self, ctx: EvalContext, split: Optional[str] = None, limit=None):
    self.ctx = ctx
    self.reader = SplitReader(ctx, split or ctx.data_config.test_split, limit=limit)

  def __call__(self, params):
    ctx = self.ctx
    parts = self.reader.map(lambda rows: (self.reader.embed(params, "encode_image", rows),
                                          [r["captions"] for r in rows]))
    img = np.concatenate([p[0] for p in parts])
    captions = [c for p in parts for c in p[1]]
    tokens, strings = pipeline.caption_tokens(ctx.handle.tokenizer, captions,
                                              ctx.data_config.max_len)
    n, k, l = tokens.shape
    txt = embed(ctx, params, "encode_text", tokens.reshape(n * k, l)).reshape(n, k, -1)
    out = {**recall_at_k(img, txt), "num_images": n,
           "duplicate_caption_frac": duplicate_fraction(strings)}
    if self.reader.skipped:
      out["skipped_records"] = self.reader.skipped
    return out
