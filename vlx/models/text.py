"""Text transformer: causal (CLIP) or bidirectional (SigLIP/BERT), pooled by
eot/argmax/first/last/final/mean."""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from vlx.models import layers
from vlx.models.prompt_tuning import PromptedBlock
from vlx.token_ids import PAD_ID


def pool_tokens(x, tokens, how: str, eos_id: int):
  """Pool [B, L, D] to [B, D]; padding (id 0) is never pooled."""
  valid = tokens != PAD_ID
  length = valid.sum(-1)
  if how == "first":
    return x[:, 0]
  if how == "last":
    idx = jnp.maximum(length - 1, 0)
    return jnp.take_along_axis(x, idx[:, None, None], axis=1)[:, 0]
  if how == "eot":
    is_eos = tokens == eos_id
    # First EOS; falls back to the last real token when a caption was truncated.
    idx = jnp.where(is_eos.any(-1), jnp.argmax(is_eos, -1), jnp.maximum(length - 1, 0))
    return jnp.take_along_axis(x, idx[:, None, None], axis=1)[:, 0]
  if how == "final":  # the last position, padding or not (SigLIP pads to a fixed length)
    return x[:, -1]
  if how == "argmax":  # the highest id (OpenAI CLIP: EOT is the last id of its vocabulary)
    return jnp.take_along_axis(x, jnp.argmax(tokens, -1)[:, None, None], axis=1)[:, 0]
  if how == "mean":
    w = valid[..., None].astype(x.dtype)
    return (x * w).sum(1) / jnp.maximum(w.sum(1), 1.)
  raise ValueError(f"unknown text pooling {how!r}; known: argmax, eot, final, first, last, mean")


class TextTransformer(nn.Module):
  """Token ids [B, L] (0 = padding) -> (pooled [B, width], tokens [B, L, width])."""
  vocab_size: int = 32_000
  max_len: int = 77
  width: int = 512
  depth: int = 12
  num_heads: int = 8
  mlp_ratio: float = 4.0
  causal: bool = True
  pool: str = "eot"
  eos_id: int = 2
  scan: bool = False
  remat: str = "none"
  # Imported checkpoints: CLIP's id 0 is a real token ('!'), SigLIP attends to its padding.
  mask_padding: bool = True
  mlp_dim: Optional[int] = None  # overrides mlp_ratio (checkpoints give the exact size)
  ln_eps: float = 1e-6
  act: str = "gelu_tanh"
  # Deep prompt tuning (vlx/models/prompt_tuning.py): learned prompt tokens in every block,
  # gated to start as the tower without them; 0: none.
  prompts: int = 0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tokens):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    if tokens.shape[1] > self.max_len:
      raise ValueError(f"text length {tokens.shape[1]} exceeds max_len {self.max_len}")
    embed = self.param("token_embedding",
                       layers.boxed(nn.initializers.normal(0.02), ("vocab", "embed")),
                       (self.vocab_size, self.width), self.param_dtype)
    pos = self.param("pos_embedding",
                     layers.boxed(nn.initializers.normal(0.01), (None, "pos", "embed")),
                     (1, self.max_len, self.width), self.param_dtype)
    x = jnp.take(embed.astype(self.dtype), tokens, axis=0) + pos[:, :tokens.shape[1]].astype(
        self.dtype)
    x = layers.constrain(x, layers.ACT)
    # Keys that are padding are masked; with a causal mask, real tokens never see padding anyway.
    mask = (tokens != PAD_ID)[:, None, None, :] if self.mask_padding else None
    x = layers.Encoder(self.depth, self.num_heads, self.mlp_dim or int(self.width * self.mlp_ratio),
                       is_causal=self.causal, scan=self.scan, remat=self.remat,
                       ln_eps=self.ln_eps, act=self.act,
                       block=PromptedBlock if self.prompts else None,
                       block_kw=dict(num_prompts=self.prompts) if self.prompts else None,
                       name="encoder", **kw)(x, mask)
    return pool_tokens(x, tokens, self.pool, self.eos_id), x
