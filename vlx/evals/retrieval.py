"""Image<->text retrieval recall@K against every reference caption (COCO/Flickr protocol)."""

from __future__ import annotations

import collections

import numpy as np

from vlx import registry
from vlx.evals.common import EvalContext, embed
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

  def __init__(self, ctx: EvalContext, split: str = "test", limit=None):
    self.ctx = ctx
    self.data = pipeline.load_eval_arrays(ctx.handle, split, ctx.data_config.pp_eval,
                                          ctx.data_config.max_len, limit)
    self.dup = duplicate_fraction(self.data["caption_strings"])

  def __call__(self, params):
    img = embed(self.ctx, params, "encode_image", self.data["image"])
    tokens = self.data["text"]
    n, k, l = tokens.shape
    txt = embed(self.ctx, params, "encode_text", tokens.reshape(n * k, l)).reshape(n, k, -1)
    return {**recall_at_k(img, txt), "num_images": n, "duplicate_caption_frac": self.dup}
