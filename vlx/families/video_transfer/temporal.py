"""Frozen-feature paradigm: time added on top of an image model's per-frame embeddings.

Each module maps frame embeddings `[B, T, E]` (the image model's projected features of every
frame, `frame_mask [B, T]` for padded clips) to frame embeddings of the same shape, which the
model then averages over the real frames: `mean` adds nothing (CLIP4Clip's meanP, blind to
frame order by construction: the control); `seq_transformer` is CLIP4Clip's seqTransf, a
temporal transformer whose output projection starts at zero, so it starts as the identity
(its position table may then start as a sinusoid: order is readable from the first step) and
the frame count stays a call-time property (the table is interpolated to a clip longer than
`max_frames`); `mit` is X-CLIP's multi-frame integration transformer,
`x + Encoder(x + time_pos)` (its residual branches start at zero, and its table at zero or, as
vlx trains it, as a sinusoid centred over each clip's frames: `2x` on average at init, the
same direction once normalised); `evl` is an EVL-style decoder whose queries read the image
tower's patch tokens of every frame (`reads_tokens`: called with them as `tokens`; with
`layers_read` > 1, each decoder layer reads the states of another of the tower's last blocks),
its output added to every frame through a projection that starts at zero; with `time_conv`
(EVL's local temporal convolution) each token the decoder reads first gains a depthwise
convolution over time of itself in the neighbouring frames (`depthwise_time_conv`), so where a
patch changes from frame to frame is in the token itself, not left to the queries' attention.
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from vlx.models import layers
from vlx.models.video import interpolate_time, sincos_1d
from vlx.models.vit import sincos_2d


class MeanPool(nn.Module):
  """Frame embeddings as they are (the model averages them)."""

  def __call__(self, x, frame_mask=None):
    del frame_mask
    return x


class SeqTransformer(nn.Module):
  """`x + out(Encoder(x + time_pos))`, `out` zero at init (`time_pos` as `time_init` says)."""
  depth: int = 2
  num_heads: int = 4
  mlp_ratio: float = 4.0
  max_frames: int = 16
  time_init: str = "zeros"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, frame_mask=None):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    e = x.shape[-1]
    pos = time_table(self, x, self.max_frames, self.time_init)
    keys = None if frame_mask is None else frame_mask.astype(bool)[:, None, None, :]
    h = layers.Encoder(self.depth, self.num_heads, int(e * self.mlp_ratio), name="encoder",
                       **kw)(x + pos.astype(x.dtype), keys)
    return x + layers.dense(e, "embed", "joint", kernel_init=nn.initializers.zeros,
                            name="out", **kw)(h)


class MultiframeIntegration(nn.Module):
  """X-CLIP's MIT: a pre-norm stack without a final norm over the frame embeddings plus a
  temporal position table, added to its input. The model averages its output over frames.

  X-CLIP's table starts at zero (imported ones hold theirs); while the residual branches are
  near zero, the frame average sends every row of it the same gradient, and vlx's X-CLIP
  started so stayed at 0.50 on the twins after 1000 steps. `center_time` subtracts the
  table's mean over each clip's real frames, which the frame average then cancels: the table
  may start as a sinusoid (frames told apart from the first step) while the model still
  starts as the image model."""
  depth: int = 1
  num_heads: int = 8
  mlp_dim: Optional[int] = None
  max_frames: int = 16
  act: str = "quick_gelu"
  ln_eps: float = 1e-5
  time_init: str = "zeros"
  center_time: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, frame_mask=None):
    e = x.shape[-1]
    pos = time_table(self, x, self.max_frames, self.time_init)
    if self.center_time:
      real = (jnp.ones(x.shape[:2], bool) if frame_mask is None
              else frame_mask.astype(bool))[..., None]
      pos = pos - (jnp.where(real, pos, 0).sum(axis=1, keepdims=True)
                   / jnp.maximum(real.sum(axis=1, keepdims=True), 1))
    keys = None if frame_mask is None else frame_mask.astype(bool)[:, None, None, :]
    h = layers.Encoder(self.depth, self.num_heads, self.mlp_dim or 4 * e, final_norm=False,
                       act=self.act, ln_eps=self.ln_eps, block_kw=dict(zero_residual=True),
                       dtype=self.dtype, param_dtype=self.param_dtype, name="encoder")(
                           x + pos.astype(x.dtype), keys)
    return x + h


class EvlDecoder(nn.Module):
  """EVL-style (Lin et al. 2022, "Frozen CLIP models are efficient video learners"): learned
  queries cross-attend to the frozen image tower's patch tokens of every frame through a small
  pre-norm decoder, and the queries' output, mapped into the joint space by a projection that
  starts at zero, is added to every frame embedding (the image model's at init). A time table
  (a sinusoid at the start) and a fixed 2-D sinusoid in space are added to the tokens, so the
  decoder reads where and when each one is: what a pooled frame embedding loses (the image
  model was never asked where a shape is) and a temporal module over frame embeddings cannot
  get back. `layers_read` 1: every decoder layer reads the tower's output tokens; `depth`:
  as in EVL, decoder layer i reads the states of the tower's block `L - depth + i` (the
  tower's last `depth` blocks, mid-stack states the last layer's pooling may not keep), each
  through its own LayerNorm (`ln_memory_i`), the tower's residual stream not being
  normalised there.

  `per_frame`: the queries read each frame's tokens on their own (the time table and, with
  `time_conv`, the neighbouring frames still in them), and each frame gets its own output;
  `frames_depth` > 0 then runs seqTransf's temporal transformer (`frames`) over those frame
  embeddings. One clip-level output added to every frame gives a transformer over the frames
  nothing frame by frame to compare; per frame, each frame's own output can carry what
  changes there (`:evl,seq_transformer`: 0.894 on the twins against the clip-level
  decoder's 0.884 at the same lr, docs/video_transfer.md)."""
  depth: int = 2
  num_heads: int = 4
  num_queries: int = 4  # several: one query's self-attention would be a constant
  mlp_ratio: float = 4.0
  max_frames: int = 16
  time_init: str = "sincos"
  layers_read: int = 1
  time_conv: bool = False
  per_frame: bool = False
  frames_depth: int = 0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  # Called with the image tower's tokens `[B, T, N, width]`, or with `layers_read` > 1 a
  # tuple of the read blocks' states, each `[B, T, N, width]` (tower_layers_read says which).
  reads_tokens = True

  @nn.compact
  def __call__(self, x, frame_mask=None, tokens=None):
    if tokens is None:
      raise ValueError("the EVL decoder reads the image tower's patch tokens")
    if self.frames_depth and not self.per_frame:
      raise ValueError(f"EVL frames_depth={self.frames_depth} stacks a transformer over the "
                       "frames' own outputs: set per_frame=True (the clip-level decoder gives "
                       "every frame the same one)")
    if self.layers_read not in (1, self.depth):
      raise ValueError(f"EVL layers_read={self.layers_read}: 1 (the tower's output tokens) "
                       f"or the decoder's depth {self.depth} (one block's states per layer)")
    per_layer = isinstance(tokens, (tuple, list))
    if per_layer != (self.layers_read > 1) or (per_layer and len(tokens) != self.depth):
      raise ValueError(f"EVL layers_read={self.layers_read} got "
                       f"{len(tokens) if per_layer else 'one array of'} tokens")
    b, t, n, w = (tokens[0] if per_layer else tokens).shape
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    side = int(round(n ** 0.5))
    if side * side != n:
      raise ValueError(f"the EVL decoder takes a square patch grid; got {n} tokens per frame")
    space = sincos_2d(side, side, w)[0]
    time = time_table(self, x, self.max_frames, self.time_init, width=w)          # [1, T, w]

    def placed(tokens, i):  # where and when each token is, then frames x patches in one row
      if self.time_conv:  # EVL's local temporal conv, one per decoder layer, residual
        tokens = tokens + TimeConv(frame_mask=frame_mask, name=f"time_conv_{i}", **kw)(tokens)
      return (tokens + time[:, :, None].astype(tokens.dtype)
              + jnp.asarray(space, tokens.dtype)).reshape(b, t * n, w)

    if per_layer:
      memory = tuple(placed(layers.layer_norm(name=f"ln_memory_{i}", **kw)(layer), i)
                     for i, layer in enumerate(tokens))
    else:
      memory = placed(tokens, 0)
    memory_mask = None
    rows = b
    if self.per_frame:  # each frame's queries read that frame's tokens only
      memory = jax.tree.map(lambda m: m.reshape(b * t, n, w), memory)
      rows = b * t
    elif frame_mask is not None:
      memory_mask = jnp.repeat(frame_mask.astype(bool), n, axis=1)[:, None, None, :]
    queries = self.param("queries", layers.boxed(nn.initializers.normal(0.02),
                                                 (None, None, "embed")),
                         (1, self.num_queries, w), self.param_dtype)
    h = layers.Encoder(self.depth, self.num_heads, int(w * self.mlp_ratio),
                       cross_attention=True, name="decoder", **kw)(
                           jnp.broadcast_to(queries.astype(self.dtype),
                                            (rows,) + queries.shape[1:]),
                           None, memory, memory_mask)
    delta = layers.dense(x.shape[-1], "embed", "joint", kernel_init=nn.initializers.zeros,
                         name="out", **kw)(h.mean(axis=1))
    if not self.per_frame:
      return x + delta[:, None].astype(x.dtype)
    x = x + delta.reshape(b, t, -1).astype(x.dtype)
    if self.frames_depth:
      x = SeqTransformer(self.frames_depth, self.num_heads, self.mlp_ratio, self.max_frames,
                         self.time_init, name="frames", **kw)(x, frame_mask)
    return x


def depthwise_time_conv(x, kernel, bias, frame_mask=None):
  """`x [B, T, ..., C]` convolved over time, channel by channel (`kernel [K, C]`, `bias [C]`,
  zero padding, K odd): each token compared with itself in the neighbouring frames, what
  ST-Adapter and EVL add to read motion. Padded frames (`frame_mask [B, T]` False) are zeroed
  first, so they never reach a real frame."""
  if frame_mask is not None:
    real = frame_mask.astype(bool).reshape(frame_mask.shape + (1,) * (x.ndim - 2))
    x = jnp.where(real, x, 0)
  k, t = kernel.shape[0], x.shape[1]
  pad = [(0, 0)] * x.ndim
  pad[1] = (k // 2, k // 2)
  padded = jnp.pad(x, pad)
  return sum(kernel[i] * padded[:, i:i + t] for i in range(k)) + bias


class TimeConv(nn.Module):
  """EVL's temporal convolution over `[B, T, N, C]` tokens (depthwise, kernel 3: the kernel
  drawn as PyTorch's Conv1d draws it, uniform in +-1/sqrt(3); the bias at zero)."""
  kernel_size: int = 3
  frame_mask: Any = None
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    k, c = self.kernel_size, x.shape[-1]
    bound = 1 / k ** 0.5
    init = lambda key, shape, dtype: jax.random.uniform(key, shape, dtype, -bound, bound)  # noqa: E731
    kernel = self.param("kernel", layers.boxed(init, (None, "embed")), (k, c), self.param_dtype)
    bias = self.param("bias", layers.boxed(nn.initializers.zeros, ("embed",)), (c,),
                      self.param_dtype)
    return depthwise_time_conv(x, kernel.astype(self.dtype), bias.astype(self.dtype),
                               self.frame_mask)


def sincos_init(key, shape, dtype):
  """A fixed 1-D sinusoid (VideoMAE's table) as the start of a learned time table."""
  del key
  return jnp.asarray(sincos_1d(shape[1], shape[2]), dtype)


# How a time table starts: zeros (no order until it learns one; a table added to the residual
# stream must start so) or a sinusoid (frames told apart from the first step; only where what
# reads the table starts at zero, so the model still starts as the image model).
TIME_INITS = {"zeros": nn.initializers.zeros, "sincos": sincos_init}


def time_table(module: nn.Module, x, max_frames: int, init: str = "zeros",
               width: Optional[int] = None):
  """`time_pos_embedding [1, max_frames, E]` of `module` for `x [B, T, E]`'s T frames (E:
  `width` if given), interpolated when T exceeds the table."""
  if init not in TIME_INITS:
    raise ValueError(f"unknown time table init {init!r}; known: {', '.join(TIME_INITS)}")
  t, e = x.shape[1], width or x.shape[2]
  pos = module.param("time_pos_embedding",
                     layers.boxed(TIME_INITS[init], (None, "pos", "embed")),
                     (1, max_frames, e), module.param_dtype)
  return pos[:, :t] if t <= max_frames else interpolate_time(pos, t)


TEMPORAL = {"mean": MeanPool, "seq_transformer": SeqTransformer, "mit": MultiframeIntegration,
            "evl": EvlDecoder}


def tower_layers_read(temporal, depth: int) -> tuple:
  """The image tower's blocks whose states the temporal module reads (the ViT's
  `hidden_layers`): EVL with `layers_read` K > 1 reads the last K; () for any other."""
  temporal = dict(temporal or {})
  k = temporal.get("layers_read", 1) if temporal.get("kind") == "evl" else 1
  if k > depth:
    raise ValueError(f"EVL layers_read={k}: the image tower has {depth} blocks")
  return tuple(range(depth - k, depth)) if k > 1 else ()


def build_temporal(kind: str = "mean", **fields) -> nn.Module:
  if kind not in TEMPORAL:
    raise ValueError(f"unknown temporal module {kind!r}; known: {', '.join(TEMPORAL)}")
  if kind == "mean":
    fields.pop("dtype", None)
  return TEMPORAL[kind](**fields)
