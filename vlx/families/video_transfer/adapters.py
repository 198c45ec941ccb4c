"""Adapted-feature paradigm: video adapters inside the image ViT's blocks.

`AdaptedBlock` is the image Block (the same parameter names, so a CLIP tower loads into it
unchanged) with an adapter whose output projection starts at zero: at initialisation it
computes exactly what the image block computes, frame by frame. The frames of a clip arrive
folded into the batch (`[B * T, N, width]`, clip-major), and the frame count is a call-time
attribute, so one set of weights serves any number of frames.

- `st_adapter` (Pan et al. 2022, ST-Adapter): before the attention, `x + up(conv_t(down(x)))`,
  a depthwise convolution over time (kernel 3 x 1 x 1) in a bottleneck.
- `aim` (Yang et al. 2023, AIM): the block's own (frozen) attention run again over time, each
  token attending to itself in the other frames, through a T-adapter; an S-adapter after the
  spatial attention and an adapter beside the MLP. No new attention weights; a temporal
  position table (zero at init) tells the frames apart, without which attention over time
  is blind to their order (as the frame average is).

Padded frames (`frame_mask` False) are zeroed before the temporal convolution and hidden from
the temporal attention, so they never reach a real frame's features.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from vlx.models import layers
from vlx.models.video import interpolate_time

ADAPTERS = ("none", "st_adapter", "aim")


class Bottleneck(nn.Module):
  """`up(act(down(x)))` with `up` zeroed at init (0 out, or `x` with `skip`)."""
  width: int
  skip: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    h = nn.gelu(layers.dense(self.width, "embed", "mlp", name="down", **kw)(x))
    y = layers.dense(x.shape[-1], "mlp", "embed", kernel_init=nn.initializers.zeros,
                     name="up", **kw)(h)
    return x + y if self.skip else y


def by_clip(x, frames: int):
  """`[B * T, N, C]` (frames folded into the batch) -> `[B, T, N, C]`."""
  return x.reshape(x.shape[0] // frames, frames, *x.shape[1:])


class STAdapter(nn.Module):
  """`up(depthwise_conv_t(down(x)))` over `[B * T, N, C]`, `up` zeroed at init."""
  width: int
  frames: int = 1
  frame_mask: Any = None
  kernel_size: int = 3
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    h = by_clip(layers.dense(self.width, "embed", "mlp", name="down", **kw)(x), self.frames)
    if self.frame_mask is not None:
      h = jnp.where(self.frame_mask.astype(bool)[:, :, None, None], h, 0)
    k = self.kernel_size
    kernel = self.param("conv_kernel", layers.boxed(nn.initializers.normal(1 / k), (None, "mlp")),
                        (k, self.width), self.param_dtype).astype(self.dtype)
    bias = self.param("conv_bias", layers.boxed(nn.initializers.zeros, ("mlp",)),
                      (self.width,), self.param_dtype).astype(self.dtype)
    padded = jnp.pad(h, ((0, 0), (k // 2, k // 2), (0, 0), (0, 0)))
    h = sum(kernel[i] * padded[:, i:i + self.frames] for i in range(k)) + bias
    h = h.reshape(x.shape[:-1] + (self.width,))
    return layers.dense(x.shape[-1], "mlp", "embed", kernel_init=nn.initializers.zeros,
                        name="up", **kw)(h)


class AdaptedBlock(layers.Block):
  """A pre-norm image Block hosting `adapter` (none | st_adapter | aim) of `bottleneck`
  width, for clips of `frames` frames folded into the batch (`frame_mask [B, T]`)."""
  adapter: str = "none"
  bottleneck: int = 32
  frames: int = 1
  frame_mask: Any = None
  max_frames: int = 16  # AIM's temporal position table (interpolated to longer clips)

  @nn.compact
  def __call__(self, x, mask=None, memory=None, memory_mask=None):
    if self.norm != "pre" or self.cross_attention or self.decode:
      raise ValueError("video adapters sit in pre-norm self-attention blocks (image ViTs)")
    if self.adapter not in ADAPTERS:
      raise ValueError(f"unknown video adapter {self.adapter!r}; known: {', '.join(ADAPTERS)}")
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    adapter = dict(width=self.bottleneck, **kw)
    if self.adapter == "st_adapter":
      x = x + STAdapter(frames=self.frames, frame_mask=self.frame_mask, name="st_adapter",
                        **adapter)(x)
    ln_attn = layers.layer_norm(name="ln_attn", eps=self.ln_eps, **kw)
    attn = layers.Attention(self.num_heads, name="attn", **kw)
    if self.adapter == "aim":
      x = x + Bottleneck(name="t_adapter", **adapter)(self._attend_over_time(attn, ln_attn(x)))
    y = ln_attn(x)
    h = attn(y, y, mask, self.is_causal)
    if self.adapter == "aim":
      h = Bottleneck(skip=True, name="s_adapter", **adapter)(h)
    x = x + h
    y = layers.layer_norm(name="ln_mlp", eps=self.ln_eps, **kw)(x)
    h = layers.Mlp(self.mlp_dim, act=self.act, name="mlp", **kw)(y)
    if self.adapter == "aim":
      h = h + Bottleneck(name="mlp_adapter", **adapter)(y)
    return layers.constrain(x + h, layers.ACT), None

  def _attend_over_time(self, attn, y):
    """Each token attends to the same token in the clip's other (real) frames, told apart by
    a temporal position table (zero at init; attention alone is blind to frame order)."""
    b, t, n, c = by_clip(y, self.frames).shape
    pos = self.param("time_pos_embedding",
                     layers.boxed(nn.initializers.zeros, (None, "pos", "embed")),
                     (1, self.max_frames, c), self.param_dtype)
    pos = pos[:, :t] if t <= self.max_frames else interpolate_time(pos, t)
    seq = by_clip(y, self.frames) + pos[:, :, None].astype(y.dtype)
    seq = seq.transpose(0, 2, 1, 3).reshape(b * n, t, c)
    keys = None
    if self.frame_mask is not None:
      keys = jnp.repeat(self.frame_mask.astype(bool), n, axis=0)[:, None, None, :]
    out = attn(seq, seq, keys)
    return out.reshape(b, n, t, c).transpose(0, 2, 1, 3).reshape(b * t, n, c)
