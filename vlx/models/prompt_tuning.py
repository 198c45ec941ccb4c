"""Deep prompt tuning inside a frozen transformer: learned prompt tokens that every block's
tokens attend to through the block's own (frozen) attention weights, gated to start as the
block it replaces.

`GatedExtraAttention` is self-attention whose keys and values also hold `extra` tokens (a
block's prompts, X-CLIP's frame message) under `layers.Attention`'s parameter names, so a
pretrained attention loads unchanged: `o + gate * (joint - o)`, the token-only attention `o`
moved toward the attention over [tokens; extra] `joint`. At gate 0 it is the pretrained
block exactly (a tuned model starts where the frozen one is); at 1 it is the prompted
attention of VPT-deep (Jia et al. 2022): prompt tokens that go through the block's norm and
frozen key / value projections (P-tuning v2 learns the keys and values themselves).

`PromptedBlock` is a pre-norm `layers.Block` with `num_prompts` such tokens (`prompt_tokens`,
`prompt_gate`; the prompts' own outputs are dropped, as deep prompt tuning replaces them at
the next block). A text tower takes it with `TextTransformer(prompts=N)`: text prompt
tuning (CoOp, VideoPrompt put learned prompts at the input only; this is the deep variant),
causal (every token sees every prompt, and no later token).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vlx.models import layers


class GatedExtraAttention(nn.Module):
  """Self-attention of `x [B, N, C]` with `extra [B, P, C]` added to its keys and values
  (see the module docstring). `mask`: the token keys' mask (broadcastable to
  `[B, 1, N, N]`, True = attend) and `is_causal` for the token part; the extra tokens are
  seen by every token."""
  num_heads: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, extra, gate, mask=None, is_causal: bool = False):
    width, n = x.shape[-1], x.shape[1]
    proj = lambda name: layers.DenseGeneral(  # noqa: E731
        (self.num_heads, width // self.num_heads), ("embed",), ("heads", "kv"),
        dtype=self.dtype, param_dtype=self.param_dtype, name=name)
    heads = ("act_batch", "act_len", "act_heads", "act_kv")
    seq = jnp.concatenate([x, extra.astype(x.dtype)], axis=1)
    q = layers.constrain(proj("query")(x), heads)
    k = layers.constrain(proj("key")(seq), heads)
    v = layers.constrain(proj("value")(seq), heads)
    tokens_only = jax.nn.dot_product_attention(q, k[:, :n], v[:, :n], mask=mask,
                                               is_causal=is_causal)
    joint_mask = None
    if mask is not None or is_causal:
      token_mask = jnp.ones((x.shape[0], 1, n, n), bool)
      if mask is not None:
        token_mask = token_mask & mask
      if is_causal:
        token_mask = token_mask & jnp.tril(jnp.ones((n, n), bool))
      joint_mask = jnp.concatenate(
          [token_mask, jnp.ones((x.shape[0], 1, n, extra.shape[1]), bool)], axis=-1)
    joint = jax.nn.dot_product_attention(q, k, v, mask=joint_mask)
    out = tokens_only + gate.astype(tokens_only.dtype) * (joint - tokens_only)
    out = layers.DenseGeneral((width,), ("heads", "kv"), ("embed",), num_in=2, dtype=self.dtype,
                              param_dtype=self.param_dtype, name="out")(
                                  layers.constrain(out, heads))
    return layers.constrain(out, layers.ACT)


def prompt_params(module: nn.Module, num_prompts: int, width: int):
  """`module`'s learned prompts `prompt_tokens [num_prompts, width]` and their gate
  `prompt_gate` (0 at init)."""
  prompts = module.param("prompt_tokens", layers.boxed(nn.initializers.normal(0.02),
                                                       (None, "embed")),
                         (num_prompts, width), module.param_dtype)
  gate = module.param("prompt_gate", layers.boxed(nn.initializers.zeros, ()), (),
                      module.param_dtype)
  return prompts, gate


class PromptedBlock(layers.Block):
  """A pre-norm self-attention Block with `num_prompts` learned prompt tokens its tokens
  attend to, their share gated by `prompt_gate` (0 at init: the Block exactly)."""
  num_prompts: int = 8

  @nn.compact
  def __call__(self, x, mask=None, memory=None, memory_mask=None):
    if self.norm != "pre" or self.cross_attention or self.decode or self.zero_residual:
      raise ValueError("prompt tuning sits in pre-norm self-attention blocks without a KV "
                       "cache or zero-initialised residuals")
    del memory, memory_mask
    prompts, gate = prompt_params(self, self.num_prompts, x.shape[-1])
    extra = jnp.broadcast_to(prompts.astype(self.dtype)[None], (x.shape[0],) + prompts.shape)
    return gated_extra_block(self, x, extra, gate, mask, self.is_causal), None


def gated_extra_block(block: layers.Block, x, extra, gate, mask=None, causal: bool = False):
  """The pre-norm Block's attention and MLP, called inside `block`'s compact method (its
  `ln_attn`, `attn`, `ln_mlp`, `mlp`: the image Block's names, so its weights load), with
  the attention also reading `extra` tokens `[B, E, C]` through `gate`. One body for
  X-CLIP's messages, VPT and the text prompts."""
  kw = dict(dtype=block.dtype, param_dtype=block.param_dtype)
  ln_attn = layers.layer_norm(name="ln_attn", eps=block.ln_eps, **kw)
  x = x + GatedExtraAttention(block.num_heads, name="attn", **kw)(
      ln_attn(x), ln_attn(extra), gate, mask, causal)
  y = layers.layer_norm(name="ln_mlp", eps=block.ln_eps, **kw)(x)
  h = layers.Mlp(block.mlp_dim, act=block.act, name="mlp", **kw)(y)
  return layers.constrain(x + h, layers.ACT)
