"""Transformer building blocks shared by every vlx model.

Every parameter carries logical axis names (`embed`, `mlp`, `heads`, `kv`,
`vocab`, ...) and every large activation a logical constraint (`act_batch`,
`act_len`, `act_embed`, ...); the mapping of those names onto mesh axes lives in
the config (`config.sharding.rules`), so one model definition serves data
parallel, FSDP and tensor parallel meshes alike.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any
Initializer = Callable[..., jax.Array]

ACT = ("act_batch", "act_len", "act_embed")

# The compute dtypes a model's `dtype` field names (config_checks normalizes the spellings).
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def boxed(init: Initializer, axes: Sequence[Optional[str]]) -> Initializer:
  return nn.with_logical_partitioning(init, tuple(axes))


def constrain(x: jax.Array, axes: Sequence[Optional[str]]) -> jax.Array:
  return nn.with_logical_constraint(x, tuple(axes))


class DenseGeneral(nn.Module):
  """Dense layer over named input/output axes, with logical names on its kernel.

  `in_axes` names the contracted trailing input dims, `out_axes` the new ones;
  e.g. QKV projections map `embed -> (heads, kv)`.
  """
  features: Tuple[int, ...]
  in_names: Tuple[str, ...]
  out_names: Tuple[str, ...]
  num_in: int = 1
  use_bias: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernel_init: Initializer = nn.initializers.xavier_uniform()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    in_shape = x.shape[-self.num_in:]
    features = tuple(self.features)
    fan_in = 1
    for d in in_shape:
      fan_in *= d
    fan_out = 1
    for d in features:
      fan_out *= d

    def init(key, shape, dtype):
      flat = self.kernel_init(key, (fan_in, fan_out), dtype)
      return flat.reshape(shape)

    kernel = self.param("kernel", boxed(init, self.in_names + self.out_names),
                        in_shape + features, self.param_dtype)
    # One 2-D GEMM over flattened rows, not an einsum over [..., in] dims: autodiff then
    # gives XLA plain 2-D dots for both gradients, where contracting the 3-D batch and
    # length dims of an einsum's transpose ran ~9% slower end to end on XLA:CPU
    # (experiments/bench_train_step.py, alternating processes).
    lead = x.shape[:x.ndim - self.num_in]
    y = jnp.matmul(x.astype(self.dtype).reshape((-1, fan_in)),
                   kernel.astype(self.dtype).reshape((fan_in, fan_out)))
    y = y.reshape(lead + features)
    if self.use_bias:
      bias = self.param("bias", boxed(nn.initializers.zeros, self.out_names),
                        features, self.param_dtype)
      y = y + bias.astype(self.dtype)
    return y


def dense(features: int, in_name: str, out_name: str, dtype, param_dtype, **kw):
  return DenseGeneral((features,), (in_name,), (out_name,), dtype=dtype,
                      param_dtype=param_dtype, **kw)


def joint_projection(embed_dim: int, name: str, dtype, param_dtype):
  """A tower's linear map into the joint image-text space (CLIP's: no bias, Xavier init)."""
  return dense(embed_dim, "embed", "joint", dtype, param_dtype, use_bias=False,
               kernel_init=nn.initializers.xavier_uniform(), name=name)


PROJECTIONS = ("linear", "linear_bias", "none")


def tower_projection(kind: str, embed_dim: int, name: str, dtype):
  """A tower's map into the joint space, by config word: `linear` (CLIP's: no bias, Xavier
  init), `linear_bias` (SigLIP's text head) or `none` (the tower's own head, e.g. a MAP head,
  is the embedding: returns None)."""
  if kind not in PROJECTIONS:
    raise ValueError(f"{name}: unknown projection {kind!r}; known: {', '.join(PROJECTIONS)}")
  if kind == "none":
    return None
  return dense(embed_dim, "embed", "joint", dtype, jnp.float32, use_bias=kind == "linear_bias",
               kernel_init=nn.initializers.xavier_uniform(), name=name)


def l2_normalize(x, eps=1e-6):
  """Unit-length rows in float32: the embeddings that contrastive logits compare."""
  x = x.astype(jnp.float32)
  return x / jnp.sqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps * eps))


def log_logit_scale(module: nn.Module, temperature_init: float):
  """The contrastive logit scale's learned log, started at log(temperature_init); called
  from `module.setup` so every contrastive model names and shards it alike."""
  return module.param("logit_scale",
                      boxed(nn.initializers.constant(math.log(temperature_init)), ()),
                      (), jnp.float32)


def layer_norm(dtype, param_dtype, name=None, eps: float = 1e-6):
  return nn.LayerNorm(
      epsilon=eps, dtype=dtype, param_dtype=param_dtype, name=name,
      scale_init=boxed(nn.initializers.ones, ("norm",)),
      bias_init=boxed(nn.initializers.zeros, ("norm",)))


class Attention(nn.Module):
  """Multi-head attention on `jax.nn.dot_product_attention` (cuDNN flash on GPU).

  With `decode=True` the keys and values of every call are appended to a KV cache
  (collection "cache") so autoregressive decoding computes each position once. The
  first call, made with the full target length, only creates the cache.
  """
  num_heads: int
  decode: bool = False
  out_init: Initializer = nn.initializers.xavier_uniform()
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_q, x_kv, mask=None, is_causal: bool = False):
    width = x_q.shape[-1]
    head_dim = width // self.num_heads
    proj = lambda name: DenseGeneral(  # noqa: E731
        (self.num_heads, head_dim), ("embed",), ("heads", "kv"),
        dtype=self.dtype, param_dtype=self.param_dtype, name=name)
    heads = ("act_batch", "act_len", "act_heads", "act_kv")
    q = constrain(proj("query")(x_q), heads)
    k = constrain(proj("key")(x_kv), heads)
    v = constrain(proj("value")(x_kv), heads)
    if self.decode:
      k, v, cache_mask = self._cached(k, v)
      if cache_mask is not None:  # the cache's own causal mask replaces is_causal
        mask, is_causal = cache_mask if mask is None else (mask & cache_mask), False
    out = jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=is_causal)
    out = constrain(out, heads)
    out = DenseGeneral((width,), ("heads", "kv"), ("embed",), num_in=2,
                       dtype=self.dtype, param_dtype=self.param_dtype,
                       kernel_init=self.out_init, name="out")(out)
    return constrain(out, ACT)

  def _cached(self, k, v):
    initialized = self.has_variable("cache", "cached_key")
    cached_k = self.variable("cache", "cached_key", jnp.zeros, k.shape, k.dtype)
    cached_v = self.variable("cache", "cached_value", jnp.zeros, v.shape, v.dtype)
    index = self.variable("cache", "cache_index", lambda: jnp.zeros((), jnp.int32))
    if not initialized:
      return k, v, None
    start, q_len, max_len = index.value, k.shape[1], cached_k.value.shape[1]
    cached_k.value = jax.lax.dynamic_update_slice(cached_k.value, k, (0, start, 0, 0))
    cached_v.value = jax.lax.dynamic_update_slice(cached_v.value, v, (0, start, 0, 0))
    index.value = start + q_len
    # Query i sits at absolute position start + i and sees keys at positions <= its own.
    visible = jnp.arange(max_len)[None, :] <= (start + jnp.arange(q_len))[:, None]
    return cached_k.value, cached_v.value, visible[None, None]


def quick_gelu(x):
  """OpenAI CLIP's sigmoid approximation of GELU (its checkpoints were trained with it)."""
  return x * jax.nn.sigmoid(1.702 * x)


# MLP activations by name; imported checkpoints pick the one they were trained with.
ACTIVATIONS = {
    "gelu_tanh": lambda x: nn.gelu(x, approximate=True),  # SigLIP, big_vision
    "gelu": lambda x: nn.gelu(x, approximate=False),      # open_clip, HF "gelu" (erf)
    "quick_gelu": quick_gelu,                             # OpenAI CLIP
    "relu": nn.relu,
}


def activation(name: str):
  if name not in ACTIVATIONS:
    raise ValueError(f"unknown activation {name!r}; known: {sorted(ACTIVATIONS)}")
  return ACTIVATIONS[name]


class Mlp(nn.Module):
  mlp_dim: int
  act: str = "gelu_tanh"
  out_init: Initializer = nn.initializers.xavier_uniform()
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    width = x.shape[-1]
    h = dense(self.mlp_dim, "embed", "mlp", self.dtype, self.param_dtype, name="fc1")(x)
    h = constrain(activation(self.act)(h), ("act_batch", "act_len", "act_mlp"))
    return constrain(dense(width, "mlp", "embed", self.dtype, self.param_dtype,
                           kernel_init=self.out_init, name="fc2")(h), ACT)


class PostNormAttention(nn.Module):
  """`LN(x + attention(x, context))`: a post-LayerNorm (BERT) attention sublayer.

  Its own module (params `attn`, `ln`) because BERT checkpoints group each sublayer's
  attention with its LayerNorm; the fusion stacks' cross-modal layers use it directly.
  """
  num_heads: int
  ln_eps: float = 1e-6
  decode: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, context, mask=None, is_causal: bool = False):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    y = Attention(self.num_heads, decode=self.decode, name="attn", **kw)(x, context, mask,
                                                                          is_causal)
    return layer_norm(name="ln", eps=self.ln_eps, **kw)(x + y)


class PostNormMlp(nn.Module):
  """`LN(x + mlp(x))`: BERT's intermediate + output sublayer (params `mlp`, `ln`)."""
  mlp_dim: int
  act: str = "gelu_tanh"
  ln_eps: float = 1e-6
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    y = Mlp(self.mlp_dim, act=self.act, name="mlp", **kw)(x)
    return constrain(layer_norm(name="ln", eps=self.ln_eps, **kw)(x + y), ACT)


NORMS = ("pre", "post")


def check_norm(norm: str):
  if norm not in NORMS:
    raise ValueError(f"unknown norm {norm!r}; known: {', '.join(NORMS)}")


class Block(nn.Module):
  """The one transformer block: self-attention, optional cross-attention, MLP.

  norm="pre" (ViT, CLIP, decoders): `x + f(LN(x))`, params `ln_attn`, `attn`, `ln_cross`,
  `cross_attn`, `ln_mlp`, `mlp`. norm="post" (BERT and the fusion encoders): `LN(x + f(x))`,
  params `self_attn/{attn,ln}`, `cross_attn/{attn,ln}`, `ffn/{mlp,ln}`, BERT's grouping, so
  checkpoints map one tensor to one tensor. The (carry, out) signature lets nn.scan stack it.
  `cross_attention` adds a sublayer attending to `memory` (keys masked by `memory_mask`);
  `decode` turns on the self-attention KV cache. `zero_residual` starts every residual branch's
  output projection at zero, so a new pre-norm stack starts as the identity (a module added on
  top of a trained model changes nothing until it learns to).
  """
  num_heads: int
  mlp_dim: int
  is_causal: bool = False
  cross_attention: bool = False
  decode: bool = False
  norm: str = "pre"
  ln_eps: float = 1e-6
  act: str = "gelu_tanh"
  zero_residual: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, mask=None, memory=None, memory_mask=None):
    check_norm(self.norm)
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    if self.zero_residual and self.norm != "pre":
      raise ValueError("zero_residual starts a pre-norm stack as the identity; a post-norm "
                       "block normalises its residual sum whatever the branch gives")
    out = dict(out_init=nn.initializers.zeros) if self.zero_residual else {}
    if self.norm == "post":
      kw["ln_eps"] = self.ln_eps
      x = PostNormAttention(self.num_heads, decode=self.decode, name="self_attn", **kw)(
          x, x, mask, self.is_causal)
      if self.cross_attention:
        x = PostNormAttention(self.num_heads, name="cross_attn", **kw)(x, memory, memory_mask)
      return PostNormMlp(self.mlp_dim, act=self.act, name="ffn", **kw)(x), None
    y = layer_norm(name="ln_attn", eps=self.ln_eps, **kw)(x)
    x = x + Attention(self.num_heads, decode=self.decode, name="attn", **out, **kw)(
        y, y, mask, self.is_causal)
    if self.cross_attention:
      y = layer_norm(name="ln_cross", eps=self.ln_eps, **kw)(x)
      x = x + Attention(self.num_heads, name="cross_attn", **out, **kw)(y, memory, memory_mask)
    y = layer_norm(name="ln_mlp", eps=self.ln_eps, **kw)(x)
    x = x + Mlp(self.mlp_dim, act=self.act, name="mlp", **out, **kw)(y)
    return constrain(x, ACT), None


REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "dots_all": jax.checkpoint_policies.checkpoint_dots,
}


def rematted(layer, remat: str, scan: bool):
  """`layer` (a Module class) under the named remat policy; unchanged for "none"."""
  if remat not in REMAT_POLICIES:
    raise ValueError(f"unknown remat policy {remat!r}; known: {sorted(REMAT_POLICIES)}")
  if remat == "none":
    return layer
  return nn.remat(layer, policy=REMAT_POLICIES[remat], prevent_cse=not scan)


def scanned(layer, depth: int):
  """`depth` copies of `layer` (a Module class whose call is `(carry, *broadcast) ->
  (carry, None)`) as one module under nn.scan, params stacked on a leading `layers` axis."""
  return nn.scan(layer, variable_axes={"params": 0, "cache": 0},
                 split_rngs={"params": True}, in_axes=nn.broadcast, length=depth,
                 metadata_params={nn.PARTITION_NAME: "layers"})


class Encoder(nn.Module):
  """The one stack: `depth` Blocks, unrolled (`layer_{i}`) or under `nn.scan` (`layers`),
  with an optional remat policy; towers, decoders and fusion stacks all use it.

  scan compiles one layer instead of `depth` (fast compiles for deep models);
  unrolled lets XLA fuse across layers; pick by measurement (experiments/). A pre-norm
  stack ends in a LayerNorm (`ln_final`); a post-norm one's output is normalized already.
  """
  depth: int
  num_heads: int
  mlp_dim: int
  is_causal: bool = False
  cross_attention: bool = False
  decode: bool = False
  scan: bool = False
  remat: str = "none"
  norm: str = "pre"
  # False: a pre-norm stack without `ln_final`, for towers whose norm comes after pooling
  # (VideoMAE's mean pooling + `fc_norm`).
  final_norm: bool = True
  # True: return (after ln_final, before it); X-CLIP's prompts read the last block's states
  # before the final norm, which CLIP applies to the pooled token only.
  keep_prenorm: bool = False
  # Blocks whose outputs are returned too, `(out, (states of those blocks, in order))`: what
  # an EVL-style decoder reads of a frozen tower besides its last layer (unrolled only).
  return_layers: Sequence[int] = ()
  ln_eps: float = 1e-6
  act: str = "gelu_tanh"
  # Another block class with Block's params and call (an image block that hosts video
  # adapters) and the extra attributes it takes for this call (the frame count).
  block: Any = None
  block_kw: Any = None
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, mask=None, memory=None, memory_mask=None):
    """`memory`: what the cross-attention reads, one array for every block or a tuple of
    `depth` arrays, block i reading the i-th (EVL: each decoder layer reads another layer of
    the frozen tower)."""
    check_norm(self.norm)
    per_layer = isinstance(memory, (tuple, list))
    if per_layer and len(memory) != self.depth:
      raise ValueError(f"{len(memory)} memories for a stack of {self.depth} blocks: give one "
                       "per block, or one for all")
    returned = tuple(self.return_layers)
    if not all(0 <= i < self.depth for i in returned):
      raise ValueError(f"return_layers={returned}: the blocks are 0-{self.depth - 1}")
    if (per_layer or returned) and self.scan:
      raise ValueError("per-block memories and return_layers need an unrolled stack "
                       "(scan=False)")
    if returned and self.keep_prenorm:
      raise ValueError("keep_prenorm and return_layers: ask for the last block in "
                       "return_layers instead")
    block = rematted(self.block or Block, self.remat, self.scan)
    kw = dict(num_heads=self.num_heads, mlp_dim=self.mlp_dim, is_causal=self.is_causal,
              cross_attention=self.cross_attention, decode=self.decode, norm=self.norm,
              ln_eps=self.ln_eps, act=self.act, dtype=self.dtype, param_dtype=self.param_dtype,
              **dict(self.block_kw or {}))
    states = {}
    if self.scan and self.depth:
      x, _ = scanned(block, self.depth)(name="layers", **kw)(x, mask, memory, memory_mask)
    else:
      for i in range(self.depth):
        x, _ = block(name=f"layer_{i}", **kw)(x, mask, memory[i] if per_layer else memory,
                                              memory_mask)
        states[i] = x
    y = x
    if self.norm == "pre" and self.final_norm:
      y = layer_norm(self.dtype, self.param_dtype, name="ln_final", eps=self.ln_eps)(x)
    if returned:
      return y, tuple(states[i] for i in returned)
    return (y, x) if self.keep_prenorm else y


class MapHead(nn.Module):
  """Multi-head attention pooling with learned probes (big_vision's MAP head); `mask` [B, S]
  (True: a real token) keeps padded tokens (a video's padded frames) out of the pool."""
  num_heads: int
  mlp_dim: int
  num_queries: int = 1
  ln_eps: float = 1e-6
  act: str = "gelu_tanh"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, mask=None):
    width = x.shape[-1]
    probe = self.param("probe", boxed(nn.initializers.normal(0.02), (None, "embed")),
                       (self.num_queries, width), self.param_dtype)
    q = jnp.broadcast_to(probe.astype(self.dtype), (x.shape[0],) + probe.shape)
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    keys = None if mask is None else mask[:, None, None, :]
    y = Attention(self.num_heads, name="attn", **kw)(q, x, keys)
    y = y + Mlp(self.mlp_dim, act=self.act, name="mlp", **kw)(
        layer_norm(name="ln", eps=self.ln_eps, **kw)(y))
    return y[:, 0] if self.num_queries == 1 else y
