"""The video-text dual encoder: a video tower (ViViT, TimeSformer or the time-blind FrameMean)
and the text tower, projected into one space with a learned temperature.

It returns the two-tower model's keys (`img_emb` holds the video embedding), so the shared
contrastive objectives (`clip`, `siglip`) train it unchanged; the batch carries `video`
[B, T, H, W, 3] in [-1, 1] (and, for padded clips, `frame_mask` [B, T]) instead of `image`.
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from vlx import registry
from vlx.models import layers
from vlx.models.layers import DTYPES, l2_normalize
from vlx.models.text import TextTransformer
from vlx.models.video import build_video_tower


@registry.MODELS.register("video_text")
class VideoText(nn.Module):
  """`video`: the tower's `kind` (vivit | timesformer | frame_mean) and its fields (for
  frame_mean, the image ViT's); `text`: the TextTransformer's fields. Outputs L2-normalized
  `img_emb` (the video) and `txt_emb`, the learned log temperature `logit_scale` and, with
  `bias_init`, SigLIP's `logit_bias`."""
  video: Any
  text: Any
  embed_dim: int = 512
  temperature_init: float = 1 / 0.07
  bias_init: Optional[float] = None
  video_projection: str = "linear"
  text_projection: str = "linear"
  dtype: str = "float32"

  def setup(self):
    dtype = DTYPES[self.dtype]
    fields = dict(self.video)
    kind = fields.pop("kind")
    # Named by the attribute (`video_tower`): frame_mean passes every field but the dtypes on
    # to its image ViT, so a `name` cannot go through build_video_tower.
    self.video_tower = build_video_tower(kind, **fields, dtype=dtype)
    self.txt_tower = TextTransformer(**dict(self.text), dtype=dtype, name="txt")
    self.video_proj = layers.tower_projection(self.video_projection, self.embed_dim, "video_proj",
                                              dtype)
    self.txt_proj = layers.tower_projection(self.text_projection, self.embed_dim, "txt_proj",
                                            dtype)
    self.logit_scale = layers.log_logit_scale(self, self.temperature_init)
    if self.bias_init is not None:
      self.logit_bias = self.param(
          "logit_bias", layers.boxed(nn.initializers.constant(self.bias_init), ()), (),
          jnp.float32)

  def encode_video(self, video, frame_mask=None):
    pooled, _ = self.video_tower(video, frame_mask)
    if pooled is None:
      raise ValueError("model.video.pool='none' gives no pooled embedding to project")
    if self.video_proj is not None:
      pooled = self.video_proj(pooled)
    return l2_normalize(pooled)

  def encode_text(self, text):
    pooled, _ = self.txt_tower(text)
    if self.txt_proj is not None:
      pooled = self.txt_proj(pooled)
    return l2_normalize(pooled)

  def __call__(self, batch, train: bool = True):
    del train  # no dropout
    out = {"img_emb": self.encode_video(batch["video"], batch.get("frame_mask")),
           "txt_emb": self.encode_text(batch["text"]),
           "logit_scale": self.logit_scale}
    if self.bias_init is not None:
      out["logit_bias"] = self.logit_bias
    return out
