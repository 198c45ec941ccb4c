"""The joint embedding space of every two-tower model (image-text, video-text).

The text tower, the per-tower projections, the learned temperature and SigLIP's bias are the
same whatever the other tower reads, so they live here once; a model adds its visual tower and
returns `joint_outputs`, the keys the shared contrastive objectives (`clip`, `siglip`) read.
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from vlx.models import layers
from vlx.models.layers import DTYPES, l2_normalize
from vlx.models.text import TextTransformer


class JointSpace(nn.Module):
  """Base of the two-tower models: `text` is the TextTransformer's fields; projections are
  linear | linear_bias | none (SigLIP's image tower ends in its MAP head, its text tower in a
  biased linear head). Subclasses call `setup_joint_space` from `setup`."""
  text: Any = None
  embed_dim: int = 512
  temperature_init: float = 1 / 0.07
  bias_init: Optional[float] = None
  text_projection: str = "linear"
  # Deep prompt tuning of the text tower (vlx/models/prompt_tuning.py): learned prompt tokens
  # in each of its blocks, gated to start as the tower without them; 0: none. A field of the
  # model, not of `text`, so `text` stays the fields of the tower a checkpoint holds.
  text_prompts: int = 0
  dtype: str = "float32"

  def setup_joint_space(self):
    """The text tower (`txt`), its projection, `logit_scale` and, with `bias_init`,
    `logit_bias` (parameter names every checkpoint and converter relies on)."""
    dtype = DTYPES[self.dtype]
    text = dict(self.text)
    if self.text_prompts:
      text["prompts"] = self.text_prompts
    self.txt_tower = TextTransformer(**text, dtype=dtype, name="txt")
    self.txt_proj = self.projection(self.text_projection, "txt_proj")
    self.logit_scale = layers.log_logit_scale(self, self.temperature_init)
    if self.bias_init is not None:
      self.logit_bias = self.param(
          "logit_bias", layers.boxed(nn.initializers.constant(self.bias_init), ()), (),
          jnp.float32)

  def projection(self, kind: str, name: str):
    return layers.tower_projection(kind, self.embed_dim, name, DTYPES[self.dtype])

  @staticmethod
  def embed(pooled, projection):
    """Projects a tower's pooled output into the joint space (L2-normalised)."""
    if projection is not None:
      pooled = projection(pooled)
    return l2_normalize(pooled)

  def encode_text(self, text):
    pooled, _ = self.txt_tower(text)
    return self.embed(pooled, self.txt_proj)

  def joint_outputs(self, visual_emb, txt_emb):
    """`img_emb` (the image or the video), `txt_emb`, `logit_scale` and SigLIP's `logit_bias`."""
    out = {"img_emb": visual_emb, "txt_emb": txt_emb, "logit_scale": self.logit_scale}
    if self.bias_init is not None:
      out["logit_bias"] = self.logit_bias
    return out
