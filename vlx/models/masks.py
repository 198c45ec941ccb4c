"""One attention-mask rule for prefix-LM, causal and block-causal sequences (PaliGemma's).

Each position carries `mask_ar` (1: it starts a new autoregressive block, 0: it joins the
block before it) and `input_mask` (a real token, not padding). Position i attends to j when
j's block is not later than i's, `cumsum(mask_ar)[j] <= cumsum(mask_ar)[i]`, and both are
real. So:

  prefix-LM     mask_ar = [0 0 0 | 1 1 1]  image + prompt attend fully, the suffix causally
  causal        mask_ar = [1 1 1 1 1 1]    every token its own block
  block-causal  mask_ar = [1 0 0 1 0 1]    blocks attend within themselves and to earlier ones
  full          mask_ar = [0 0 0 0 0 0]    one block

A padded query row still attends to nothing; its output is never read (the loss weights it
0). `tests/test_unified_pieces.py` writes the cases out.
"""

from __future__ import annotations

import jax.numpy as jnp


def attention_mask(mask_ar, input_mask=None):
  """`mask_ar [B, L]` (0/1 or bool), `input_mask [B, L]` (True: real) -> bool `[B, 1, L, L]`
  (query, key), the layout `jax.nn.dot_product_attention` and `layers.Attention` take."""
  block = jnp.cumsum(jnp.asarray(mask_ar, jnp.int32), axis=-1)
  allowed = block[:, None, :] <= block[:, :, None]
  if input_mask is not None:
    real = jnp.asarray(input_mask, bool)
    allowed = allowed & real[:, None, :] & real[:, :, None]
  return allowed[:, None]


def prefix_lm_mask_ar(prefix_len: int, total_len: int):
  """mask_ar `[total_len]` of a prefix of `prefix_len` positions then a causal suffix."""
  return (jnp.arange(total_len) >= prefix_len).astype(jnp.int32)
