"""Dual encoders: CLIP, ALIGN and SigLIP differ only in config (towers, pooling, loss)."""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from vlx import registry
from vlx.models import layers
from vlx.models.layers import DTYPES, l2_normalize
from vlx.models.text import TextTransformer
from vlx.models.vit import ViT

@registry.MODELS.register("two_tower")
class TwoTower(nn.Module):
  """Image and text towers with linear projections into one embedding space.

  Returns L2-normalized `img_emb`/`txt_emb` plus the learnable `logit_scale`
  (log temperature; CLIP's is clamped in the loss) and, when `bias_init` is set,
  SigLIP's `logit_bias`. Towers are configured by dicts so every ViT/text option
  is a config key.
  """
  image: Any
  text: Any
  embed_dim: int = 512
  temperature_init: float = 1 / 0.07
  bias_init: Optional[float] = None
  # Per-tower projection into the joint space: linear | linear_bias | none (SigLIP's image
  # tower ends in its MAP head, its text tower in a biased linear head).
  image_projection: str = "linear"
  text_projection: str = "linear"
  dtype: str = "float32"

  def setup(self):
    dtype = DTYPES[self.dtype]
    self.img_tower = ViT(**dict(self.image), dtype=dtype, name="img")
    self.txt_tower = TextTransformer(**dict(self.text), dtype=dtype, name="txt")
    self.img_proj = layers.tower_projection(self.image_projection, self.embed_dim, "img_proj",
                                            dtype)
    self.txt_proj = layers.tower_projection(self.text_projection, self.embed_dim, "txt_proj",
                                            dtype)
    self.logit_scale = layers.log_logit_scale(self, self.temperature_init)
    if self.bias_init is not None:
      self.logit_bias = self.param(
          "logit_bias", layers.boxed(nn.initializers.constant(self.bias_init), ()), (),
          jnp.float32)

  def encode_image(self, image):
    pooled, _ = self.img_tower(image)
    if self.img_proj is not None:
      pooled = self.img_proj(pooled)
    return l2_normalize(pooled)

  def encode_text(self, text):
    pooled, _ = self.txt_tower(text)
    if self.txt_proj is not None:
      pooled = self.txt_proj(pooled)
    return l2_normalize(pooled)

  def __call__(self, batch, train: bool = True):
    del train
    out = {"img_emb": self.encode_image(batch["image"]),
           "txt_emb": self.encode_text(batch["text"]),
           "logit_scale": self.logit_scale}
    if self.bias_init is not None:
      out["logit_bias"] = self.logit_bias
    return out
