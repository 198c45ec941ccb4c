"""Frozen-feature paradigm: time added on top of an image model's per-frame embeddings.

Each module maps frame embeddings `[B, T, E]` (the image model's projected features of every
frame, `frame_mask [B, T]` for padded clips) to frame embeddings of the same shape, which the
model then averages over the real frames: `mean` adds nothing (CLIP4Clip's meanP, blind to
frame order by construction: the control); `seq_transformer` is CLIP4Clip's seqTransf, a
temporal transformer whose position table and output projection start at zero, so it starts
as the identity and the frame count stays a call-time property (the table is interpolated
to a clip longer than `max_frames`).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from vlx.models import layers
from vlx.models.video import interpolate_time


class MeanPool(nn.Module):
  """Frame embeddings as they are (the model averages them)."""

  def __call__(self, x, frame_mask=None):
    del frame_mask
    return x


class SeqTransformer(nn.Module):
  """`x + out(Encoder(x + time_pos))`, `time_pos` and `out` zero at init."""
  depth: int = 2
  num_heads: int = 4
  mlp_ratio: float = 4.0
  max_frames: int = 16
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, frame_mask=None):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    b, t, e = x.shape
    pos = self.param("time_pos_embedding",
                     layers.boxed(nn.initializers.zeros, (None, "pos", "embed")),
                     (1, self.max_frames, e), self.param_dtype)
    pos = pos[:, :t] if t <= self.max_frames else interpolate_time(pos, t)
    keys = None if frame_mask is None else frame_mask.astype(bool)[:, None, None, :]
    h = layers.Encoder(self.depth, self.num_heads, int(e * self.mlp_ratio), name="encoder",
                       **kw)(x + pos.astype(x.dtype), keys)
    return x + layers.dense(e, "embed", "joint", kernel_init=nn.initializers.zeros,
                            name="out", **kw)(h)


TEMPORAL = {"mean": MeanPool, "seq_transformer": SeqTransformer}


def build_temporal(kind: str = "mean", **fields) -> nn.Module:
  if kind not in TEMPORAL:
    raise ValueError(f"unknown temporal module {kind!r}; known: {', '.join(TEMPORAL)}")
  if kind == "mean":
    fields.pop("dtype", None)
  return TEMPORAL[kind](**fields)
