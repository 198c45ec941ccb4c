"""A Gemma-style decoder stack (Gemma 1 / PaliGemma's language model): RMSNorm with a
`1 + scale` gain computed in float32, rotary position embeddings (the rotate-half layout of
Hugging Face's Gemma), a GeGLU MLP, multi-query / grouped-query attention (`num_kv_heads`
key/value heads shared by `num_heads` query heads), embeddings scaled by sqrt(width) on the
way in and tied to the output logits, and a KV cache for decoding.

It takes embedded inputs, so a prefix-LM puts image tokens in front of the text's
(`embed(tokens)`), and an explicit attention mask `[B, 1, L, keys]` (vlx/models/masks.py's
rule): the same stack is causal, prefix-LM or block-causal by the mask alone. With `decode`
every call writes its keys and values into the cache at the cache index and attends over the
whole cache; the caller's mask then spans the cache (`max_len` keys) and marks what each query
may read. `tests/test_gemma.py` checks logits against Hugging Face's GemmaForCausalLM and the
cache against the full forward pass.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vlx.models import layers


class RMSNorm(nn.Module):
  """x / rms(x) * (1 + scale), in float32 (the scale starts at 0: unit gain)."""
  eps: float = 1e-6
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    scale = self.param("scale", layers.boxed(nn.initializers.zeros, ("norm",)),
                       (x.shape[-1],), self.param_dtype)
    xf = x.astype(jnp.float32)
    y = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + self.eps)
    return (y * (1.0 + scale.astype(jnp.float32))).astype(x.dtype)


def rotary(x, positions, theta: float = 10_000.0):
  """Rotary embedding of `x [B, L, heads, D]` at `positions [B, L]`: the two halves of each
  head rotate by position * theta^(-2i / D) (Hugging Face's rotate-half layout)."""
  d = x.shape[-1]
  inv = 1.0 / theta ** (jnp.arange(0, d, 2, dtype=jnp.float32) / d)
  angle = positions.astype(jnp.float32)[..., None] * inv                      # [B, L, D/2]
  cos, sin = jnp.cos(angle)[:, :, None], jnp.sin(angle)[:, :, None]
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1).astype(x.dtype)


class GemmaAttention(nn.Module):
  num_heads: int
  num_kv_heads: int
  head_dim: int
  rope_theta: float = 10_000.0
  decode: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, positions, mask, memory=None):
    """Self-attention over `x` (rotary at `positions`; cached when decoding), or with
    `memory` [B, M, width] cross-attention to it (no rotary, no cache: the memory is given
    whole at every call)."""
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, use_bias=False)
    q = layers.DenseGeneral((self.num_heads, self.head_dim), ("embed",), ("heads", "kv"),
                            name="query", **kw)(x)
    src = x if memory is None else memory
    k, v = (layers.DenseGeneral((self.num_kv_heads, self.head_dim), ("embed",), (None, "kv"),
                                name=n, **kw)(src) for n in ("key", "value"))
    if memory is None:
      q, k = rotary(q, positions, self.rope_theta), rotary(k, positions, self.rope_theta)
      if self.decode:
        k, v = self._cached(k, v)
    group = self.num_heads // self.num_kv_heads
    k, v = jnp.repeat(k, group, axis=2), jnp.repeat(v, group, axis=2)
    heads = ("act_batch", "act_len", "act_heads", "act_kv")
    out = jax.nn.dot_product_attention(layers.constrain(q, heads), k, v, mask=mask,
                                       scale=self.head_dim ** -0.5)
    return layers.DenseGeneral((x.shape[-1],), ("heads", "kv"), ("embed",), num_in=2,
                               name="out", **kw)(layers.constrain(out, heads))

  def _cached(self, k, v):
    """Writes this call's keys and values at the cache index; returns the whole cache. The
    first call (made with the full length) only creates it."""
    initialized = self.has_variable("cache", "cached_key")
    ck = self.variable("cache", "cached_key", jnp.zeros, k.shape, k.dtype)
    cv = self.variable("cache", "cached_value", jnp.zeros, v.shape, v.dtype)
    index = self.variable("cache", "cache_index", lambda: jnp.zeros((), jnp.int32))
    if not initialized:
      return k, v
    ck.value = jax.lax.dynamic_update_slice(ck.value, k, (0, index.value, 0, 0))
    cv.value = jax.lax.dynamic_update_slice(cv.value, v, (0, index.value, 0, 0))
    index.value = index.value + k.shape[1]
    return ck.value, cv.value


class LayerShape(nn.Module):
  """What every layer of the stack shares (defaults: Gemma 2B, PaliGemma's decoder)."""
  num_heads: int = 8
  num_kv_heads: int = 1
  head_dim: int = 256
  mlp_dim: int = 16_384
  rope_theta: float = 10_000.0
  eps: float = 1e-6
  # Each layer also cross-attends to a memory (an encoder-decoder's decoder, OFA's layout).
  cross_attention: bool = False
  decode: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def layer_fields(self) -> dict:
    return {f: getattr(self, f) for f in LayerShape.__annotations__
            if f not in ("parent", "name")}


class GemmaBlock(LayerShape):
  """RMSNorm -> attention -> residual; [RMSNorm -> cross-attention -> residual;] RMSNorm ->
  GeGLU MLP -> residual."""

  @nn.compact
  def __call__(self, x, positions, mask, memory=None, memory_mask=None):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    attn = dict(num_heads=self.num_heads, num_kv_heads=self.num_kv_heads,
                head_dim=self.head_dim, rope_theta=self.rope_theta, **kw)
    h = RMSNorm(self.eps, self.param_dtype, name="ln_attn")(x)
    x = x + GemmaAttention(decode=self.decode, name="attn", **attn)(h, positions, mask)
    if self.cross_attention:
      h = RMSNorm(self.eps, self.param_dtype, name="ln_cross")(x)
      x = x + GemmaAttention(name="cross", **attn)(h, None, memory_mask, memory=memory)
    h = RMSNorm(self.eps, self.param_dtype, name="ln_mlp")(x)
    gate = layers.dense(self.mlp_dim, "embed", "mlp", name="gate", use_bias=False, **kw)(h)
    up = layers.dense(self.mlp_dim, "embed", "mlp", name="up", use_bias=False, **kw)(h)
    y = nn.gelu(gate, approximate=True) * up
    x = x + layers.dense(x.shape[-1], "mlp", "embed", name="down", use_bias=False, **kw)(y)
    return layers.constrain(x, layers.ACT)


class GemmaDecoder(LayerShape):
  """`embed(tokens)` -> inputs; `__call__(inputs [B, L, width], positions [B, L], mask
  [B, 1, L, keys])` -> final hidden states; `logits(hidden)` through the tied embedding.
  With `cross_attention`, `__call__` also takes `memory [B, M, width]` and `memory_mask
  [B, 1, L, M]`. `vocab_size=0`: a stack without token embedding (an encoder over inputs
  embedded elsewhere)."""
  vocab_size: int = 257_216
  width: int = 2048
  depth: int = 18

  def setup(self):
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f"num_heads {self.num_heads} is not a multiple of num_kv_heads "
                       f"{self.num_kv_heads}")
    if self.vocab_size:
      self.embedding = self.param("embedding", layers.boxed(nn.initializers.normal(0.02),
                                                            ("vocab", "embed")),
                                  (self.vocab_size, self.width), self.param_dtype)
    self.blocks = [GemmaBlock(**self.layer_fields(), name=f"layer_{i}")
                   for i in range(self.depth)]
    self.final_norm = RMSNorm(self.eps, self.param_dtype)

  def embed(self, tokens):
    """Token ids -> inputs, scaled by sqrt(width) (in the compute dtype, as Gemma does)."""
    x = jnp.take(self.embedding, tokens, axis=0).astype(self.dtype)
    return x * jnp.asarray(self.width ** 0.5, self.dtype)

  def __call__(self, x, positions, mask, memory=None, memory_mask=None):
    if self.cross_attention and memory is None:
      raise ValueError("a cross-attending decoder needs its memory")
    for block in self.blocks:
      x = block(x, positions, mask, memory, memory_mask)
    return self.final_norm(x)

  def logits(self, hidden):
    """Hidden states -> float32 logits over the vocabulary (the input embedding, tied)."""
    return jnp.einsum("bld,vd->blv", hidden.astype(jnp.float32),
                      self.embedding.astype(jnp.float32))
