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
  position table tells the frames apart, without which attention over time is blind to
  their order (as the frame average is); it may start as a sinusoid (`time_init`), since
  the T-adapter that reads it starts at zero.

- `xclip` (Ni et al. 2022, X-CLIP's cross-frame communication): each frame's class token
  (or its tokens' mean, for a ViT pooled by average) becomes a message (`message_fc`), the
  messages of a clip attend to each other (`message_attn`), and every frame's tokens attend
  to their frame's message beside
  themselves; the message is dropped after the attention. The message's share of each
  softmax is scaled by `message_gate` (X-CLIP's own attention at 1, what an imported X-CLIP
  holds; 0 at init here, where the block is then the image block exactly), through
  vlx/models/prompt_tuning.py's gated attention.

- `vpt` (Jia et al. 2022, visual prompt tuning, deep): every block gets its own learned
  prompt tokens, which the frame's tokens attend to through the block's frozen attention
  (keys and values from the block's own projections; the prompts' outputs are dropped, as
  VPT-deep replaces them at the next block). vlx's additions: a time table on the prompts,
  so each frame is prompted by where it sits in the clip (prompts alike in every frame would
  leave a frame-averaged video blind to order), and `prompt_gate` (0 at init: the image
  block exactly; VPT's attention at 1, computed as X-CLIP's message share is).

Padded frames (`frame_mask` False) are zeroed before the temporal convolution and hidden from
the temporal attention, so they never reach a real frame's features.
"""

from __future__ import annotations

import re
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from vlx.families.video_transfer.temporal import depthwise_time_conv, time_table
from vlx.models import layers
from vlx.models.prompt_tuning import gated_extra_block, prompt_params

ADAPTERS = ("none", "st_adapter", "aim", "xclip", "vpt")


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
    k = self.kernel_size
    kernel = self.param("conv_kernel", layers.boxed(nn.initializers.normal(1 / k), (None, "mlp")),
                        (k, self.width), self.param_dtype).astype(self.dtype)
    bias = self.param("conv_bias", layers.boxed(nn.initializers.zeros, ("mlp",)),
                      (self.width,), self.param_dtype).astype(self.dtype)
    h = depthwise_time_conv(h, kernel, bias, self.frame_mask)
    h = h.reshape(x.shape[:-1] + (self.width,))
    return layers.dense(x.shape[-1], "mlp", "embed", kernel_init=nn.initializers.zeros,
                        name="up", **kw)(h)


class VisualPrompts(nn.Module):
  """A block's VPT prompts for the clips' frames: `[num_prompts, width]` learned tokens plus a
  time table (per frame: `[B * T, num_prompts, width]`), and the gate of their attention
  share (`prompt_gate`, 0 at init)."""
  num_prompts: int
  frames: int = 1
  max_frames: int = 16
  time_init: str = "sincos"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    width = x.shape[-1]
    prompts, gate = prompt_params(self, self.num_prompts, width)
    clips = by_clip(x[:, :1], self.frames)[:, :, 0]                     # [B, T, C]
    time = time_table(self, clips, self.max_frames, self.time_init)     # [1, T, C]
    tokens = prompts[None, None] + time[:, :, None]                     # [1, T, P, C]
    tokens = jnp.broadcast_to(tokens, (clips.shape[0],) + tokens.shape[1:])
    return tokens.reshape(-1, self.num_prompts, width).astype(self.dtype), gate


class AdaptedBlock(layers.Block):
  """A pre-norm image Block hosting `adapter` (none | st_adapter | aim | xclip | vpt; of
  `bottleneck` width, or `num_prompts` prompts), for clips of `frames` frames folded into the
  batch (`frame_mask [B, T]`)."""
  adapter: str = "none"
  bottleneck: int = 32
  frames: int = 1
  frame_mask: Any = None
  max_frames: int = 16  # AIM's temporal position table (interpolated to longer clips)
  time_init: str = "zeros"  # how that table starts (temporal.TIME_INITS; its reader is zero)
  # X-CLIP's message share at init (see vlx/models/prompt_tuning.py's GatedExtraAttention)
  message_gate_init: float = 0.0
  message_from: str = "cls"  # the frame summary a message starts from: cls (row 0) | mean
  num_prompts: int = 8  # VPT's prompt tokens per block
  # The first block that hosts the adapter; those below run as the image model's blocks. With
  # the weights below locked, the step then skips their backward pass altogether.
  first_layer: int = 0

  @nn.compact
  def __call__(self, x, mask=None, memory=None, memory_mask=None):
    if self.norm != "pre" or self.cross_attention or self.decode:
      raise ValueError("video adapters sit in pre-norm self-attention blocks (image ViTs)")
    if self.adapter not in ADAPTERS:
      raise ValueError(f"unknown video adapter {self.adapter!r}; known: {', '.join(ADAPTERS)}")
    kind = self.adapter if self.index() >= self.first_layer else "none"
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    adapter = dict(width=self.bottleneck, **kw)
    if kind == "st_adapter":
      x = x + STAdapter(frames=self.frames, frame_mask=self.frame_mask, name="st_adapter",
                        **adapter)(x)
    if kind in ("xclip", "vpt"):
      if mask is not None:
        raise ValueError(f"{kind}'s extra keys need unmasked frame tokens (image ViTs)")
      if kind == "xclip":
        gate = self.param("message_gate", layers.boxed(
            nn.initializers.constant(self.message_gate_init), ()), (), self.param_dtype)
        extra = self._messages(x)
      else:
        extra, gate = VisualPrompts(self.num_prompts, self.frames, self.max_frames,
                                    self.time_init, name="prompt_adapter", **kw)(x)
      return gated_extra_block(self, x, extra, gate), None
    ln_attn = layers.layer_norm(name="ln_attn", eps=self.ln_eps, **kw)
    attn = layers.Attention(self.num_heads, name="attn", **kw)
    if kind == "aim":
      x = x + Bottleneck(name="t_adapter", **adapter)(self._attend_over_time(attn, ln_attn(x)))
    y = ln_attn(x)
    h = attn(y, y, mask, self.is_causal)
    if kind == "aim":
      h = Bottleneck(skip=True, name="s_adapter", **adapter)(h)
    x = x + h
    y = layers.layer_norm(name="ln_mlp", eps=self.ln_eps, **kw)(x)
    h = layers.Mlp(self.mlp_dim, act=self.act, name="mlp", **kw)(y)
    if kind == "aim":
      h = h + Bottleneck(name="mlp_adapter", **adapter)(y)
    return layers.constrain(x + h, layers.ACT), None

  def index(self) -> int:
    """This block's place in the tower (`layer_<i>`), which `first_layer` is compared with."""
    match = re.fullmatch(r"layer_(\d+)", self.name or "")
    if match:
      return int(match.group(1))
    if self.first_layer:  # a scanned stack shares one block's code among all its layers
      raise ValueError(f"adapter first_layer={self.first_layer} needs an unscanned image "
                       f"tower (layer_<i> blocks), not {self.name!r}")
    return 0

  def _messages(self, x):
    """Each frame's message `[B*T, 1, C]`: its class token (row 0; or its tokens' mean, by
    `message_from`) projected, its time position added, then the clip's messages attending
    to each other (padded frames hidden)."""
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    width = x.shape[-1]
    if self.message_from not in ("cls", "mean"):
      raise ValueError(f"message_from={self.message_from!r}; known: cls, mean")
    summary = x[:, 0] if self.message_from == "cls" else x.mean(axis=1)
    msg = by_clip(layers.dense(width, "embed", "mlp", name="message_fc", **kw)(summary),
                  self.frames)                                          # [B, T, C]
    # vlx's addition: a time table on the messages (zeros in an imported X-CLIP, which has
    # none), so they can tell frames apart from the first step; the gate starts at 0.
    msg = msg + time_table(self, msg, self.max_frames, self.time_init).astype(msg.dtype)
    keys = None
    if self.frame_mask is not None:
      keys = self.frame_mask.astype(bool)[:, None, None, :]
    y = layers.layer_norm(name="message_ln", eps=self.ln_eps, **kw)(msg)
    msg = msg + layers.Attention(self.num_heads, name="message_attn", **kw)(y, y, keys)
    return msg.reshape(-1, 1, width)

  def _attend_over_time(self, attn, y):
    """Each token attends to the same token in the clip's other (real) frames, told apart by
    a temporal position table (zero at init; attention alone is blind to frame order)."""
    clips = by_clip(y, self.frames)
    b, t, n, c = clips.shape
    pos = time_table(self, clips[:, :, 0], self.max_frames, self.time_init)
    seq = clips + pos[:, :, None].astype(y.dtype)
    seq = seq.transpose(0, 2, 1, 3).reshape(b * n, t, c)
    keys = None
    if self.frame_mask is not None:
      keys = jnp.repeat(self.frame_mask.astype(bool), n, axis=0)[:, None, None, :]
    out = attn(seq, seq, keys)
    return out.reshape(b, n, t, c).transpose(0, 2, 1, 3).reshape(b * t, n, c)
