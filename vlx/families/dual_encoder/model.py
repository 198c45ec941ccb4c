"""Dual encoders: CLIP, ALIGN and SigLIP differ only in config (towers, pooling, loss)."""

from __future__ import annotations

from typing import Any

from vlx import registry
from vlx.models.joint import JointSpace
from vlx.models.layers import DTYPES
from vlx.models.vit import ViT

@registry.MODELS.register("two_tower")
class TwoTower(JointSpace):
  """Image and text towers with projections into one embedding space.

  Returns L2-normalized `img_emb`/`txt_emb` plus the learnable `logit_scale`
  (log temperature; CLIP's is clamped in the loss) and, when `bias_init` is set,
  SigLIP's `logit_bias`. Towers are configured by dicts so every ViT/text option
  is a config key.
  """
  image: Any = None
  image_projection: str = "linear"

  def setup(self):
    self.setup_joint_space()
    self.img_tower = ViT(**dict(self.image), dtype=DTYPES[self.dtype], name="img")
    self.img_proj = self.projection(self.image_projection, "img_proj")

  def encode_image(self, image):
    pooled, _ = self.img_tower(image)
    return self.embed(pooled, self.img_proj)

  def __call__(self, batch, train: bool = True):
    del train
    return self.joint_outputs(self.encode_image(batch["image"]), self.encode_text(batch["text"]))
