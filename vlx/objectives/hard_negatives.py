"""Hard negatives for image-text matching (ITM), shared by the fusion encoders and the video
cross-encoder: ALBEF draws, for each image (video) a caption and for each caption an image,
with probability softmax(sims) over the pairs of the (global) batch that are not positives.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def positives(tokens) -> jax.Array:
  """`[B, B]` True where two captions are the same tokens (the diagonal included): the
  synthetic data repeat captions (ALBEF's rarely does), and a repeat is no negative."""
  tokens = jnp.asarray(tokens)
  return jnp.all(tokens[:, None, :] == tokens[None, :, :], axis=-1)


def hard_negatives(sims, rng, tokens=None):
  """sims [B, B] image x text logits (similarities times the contrastive scale: raw cosines
  would make the draw nearly uniform and the negatives easy); `tokens` [B, L], if given,
  marks equal captions as positives, never drawn. -> (negative text index per image [B],
  negative image index per text [B]). A row with no allowed negative (every caption equal)
  falls back to the next index, a positive: label such pairs with `positives`."""
  b = sims.shape[0]
  same = jnp.eye(b, dtype=bool) if tokens is None else positives(tokens)
  sims = jax.lax.stop_gradient(sims.astype(jnp.float32))
  k_t, k_i = jax.random.split(rng)
  neg_text = jax.random.categorical(k_t, jnp.where(same, -jnp.inf, sims), axis=1)
  neg_image = jax.random.categorical(k_i, jnp.where(same.T, -jnp.inf, sims.T), axis=1)
  fallback = (jnp.arange(b) + 1) % b
  none_t = jnp.all(same, axis=1)
  none_i = jnp.all(same.T, axis=1)
  return jnp.where(none_t, fallback, neg_text), jnp.where(none_i, fallback, neg_image)
