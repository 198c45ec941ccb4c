"""A paradigm's video side as a video tower: the image ViT read frame by frame (its adapters
inside, if any), its projection and the temporal module, giving one token per frame. With it
the video QA / grounding model (and any model that takes a registered video tower) runs on a
transferred image model, so every paradigm is scored on the fine-grained tasks too, through
the same step. Parameter names are the transfer model's (`img`, `img_proj`, `temporal`), so
an image model's checkpoint loads into it by name under the tower's scope."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vlx.families.video_transfer.adapters import AdaptedBlock
from vlx.families.video_transfer.temporal import build_temporal, tower_layers_read
from vlx.models import layers
from vlx.models.video import VIDEO_TOWERS, masked_mean
from vlx.models.vit import ViT


def image_tower(image, adapter: tuple, dtype, name: str = "img", temporal=None,
                **fields) -> ViT:
  """The image ViT, its blocks adapted when a paradigm adds adapters inside them (`adapter`:
  (kind, fields); from block `first_layer` on), handing out the states of the blocks the
  `temporal` module reads (EVL reading several layers: `tower_layers_read`)."""
  adapter_kind, adapter_fields = adapter
  first, depth = adapter_fields.get("first_layer", 0), dict(image)["depth"]
  if adapter_kind != "none" and not 0 <= first < depth:
    raise ValueError(f"adapter first_layer={first}: the image tower's blocks are 0-{depth - 1}"
                     ", so none would host the adapter")
  return ViT(**dict(image), **fields, hidden_layers=tower_layers_read(temporal, depth),
             dtype=dtype, block=None if adapter_kind == "none" else AdaptedBlock, name=name)


def fold_frames(img_tower, img_proj, video, frame_mask, adapter: tuple, frozen: bool):
  """`video [B, T, H, W, 3]` through the image tower with the frames folded into the batch ->
  (projected, unnormalised frame embeddings `[B, T, E]`, patch tokens `[B * T, N, width]`;
  from a tower with `hidden_layers`, a tuple of those blocks' states instead). `adapter` is
  (kind, fields); `frozen` stops gradients at both, which spares a frozen image tower its
  backward pass."""
  b, t = video.shape[:2]
  kind, fields = adapter
  block_kw = None if kind == "none" else dict(adapter=kind, frames=t, frame_mask=frame_mask,
                                              **fields)
  pooled, tokens, *hidden = img_tower(video.reshape((b * t,) + video.shape[2:]), block_kw)
  if hidden:
    tokens = hidden[0]
  if pooled is None:
    raise ValueError("model.image.pool='none' gives no pooled embedding to project")
  feats = pooled if img_proj is None else img_proj(pooled)
  if frozen:
    feats, tokens = jax.lax.stop_gradient((feats, tokens))
  return feats.reshape(b, t, -1), tokens


def through_time(temporal_module, feats, frame_mask, tokens):
  """The temporal module on frame embeddings `[B, T, E]`; one that `reads_tokens` (EVL) also
  gets the image tower's tokens of each frame, `[B, T, N, width]` (or a tuple of them: the
  states of the blocks it reads)."""
  if getattr(temporal_module, "reads_tokens", False):
    b, t = feats.shape[:2]
    return temporal_module(feats, frame_mask, jax.tree.map(
        lambda x: x.reshape((b, t) + x.shape[1:]), tokens))
  return temporal_module(feats, frame_mask)


class TransferTower(nn.Module):
  """`image`, `image_projection`, `embed_dim`, `adapter`, `temporal`, `frozen_image`: the
  transfer model's video side (configs/video_transfer.py's paradigm fields); `width`: the
  width of the tokens it gives (a fresh map of the temporal module's frame features, e.g. to a
  fusion stack's width). Returns (pooled `[B, width]`: the real frames' mean, tokens
  `[B, T, width]`: one per frame, in time order)."""
  image: Any
  embed_dim: int
  width: int
  image_projection: str = "linear"
  adapter: Any = None
  temporal: Any = None
  frozen_image: bool = False
  dtype: Any = jnp.float32
  tubelet = 1  # frames per token: a consumer's per-frame heads read it

  def setup(self):
    adapter = dict(self.adapter or {})
    self._adapter = (adapter.pop("kind", "none"), adapter)
    self.img_tower = image_tower(self.image, self._adapter, self.dtype,
                                 temporal=self.temporal)
    self.img_proj = layers.tower_projection(self.image_projection, self.embed_dim, "img_proj",
                                            self.dtype)
    self.temporal_module = build_temporal(**dict(self.temporal or {}), dtype=self.dtype,
                                          name="temporal")
    self.to_width = layers.dense(self.width, "joint", "embed", self.dtype, jnp.float32,
                                 name="to_width")

  def __call__(self, video, frame_mask=None):
    mask = None if frame_mask is None else frame_mask.astype(bool)
    feats, patches = fold_frames(self.img_tower, self.img_proj, video, mask, self._adapter,
                                 self.frozen_image)
    tokens = self.to_width(through_time(self.temporal_module, feats, mask, patches))
    return masked_mean(tokens, mask), tokens


VIDEO_TOWERS["transfer"] = TransferTower
