"""Suffix-only next-token loss of a prefix-LM (PaliGemma, OFA as a decoder-only model).

The model predicts every position, but only the suffix (the target text) is scored: the
image tokens and the task prompt are context, and padding is nothing. Each example's loss is
the mean over its own scored tokens, then examples are averaged, so a long target (a
detection list) weighs as much as a short one (a VQA answer) and a batch's mix of tasks does
not tilt the loss toward whichever writes more tokens.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vlx import registry


def soft_location_targets(targets, vocab: int, loc_start: int, num_bins: int, sigma: float):
  """Targets [B, L] -> distributions [B, L, vocab]: a location token's probability spread over
  the neighbouring bins (a Gaussian of `sigma` bins, renormalised within the range), every
  other token one-hot. A box one bin off then costs less than one at the far edge."""
  targets = targets.astype(jnp.int32)
  onehot = jax.nn.one_hot(targets, vocab, dtype=jnp.float32)
  bins = jnp.arange(num_bins, dtype=jnp.float32)
  centre = (targets - loc_start).astype(jnp.float32)[..., None]
  spread = jnp.exp(-0.5 * ((bins - centre) / sigma) ** 2)
  spread = spread / spread.sum(-1, keepdims=True)
  soft = jnp.zeros_like(onehot).at[..., loc_start:loc_start + num_bins].set(spread)
  is_loc = ((targets >= loc_start) & (targets < loc_start + num_bins))[..., None]
  return jnp.where(is_loc, soft, onehot)


def suffix_loss(logits, targets, loss_mask, soft_targets=None, segment=None):
  """`logits [B, L, V]` (position i predicts `targets[:, i]`), `targets [B, L]`, `loss_mask
  [B, L]` (1 on suffix tokens) -> (loss: each example's mean over its scored tokens, then
  the mean over the examples that have any, token accuracy over scored tokens, number of
  those examples). `soft_targets [B, L, V]`: score against these distributions instead
  (soft_location_targets). `segment [B, L]`: packed tasks; each (example, segment) is one
  "example" of the mean."""
  logits = logits.astype(jnp.float32)
  weights = jnp.asarray(loss_mask, jnp.float32)
  logp = jax.nn.log_softmax(logits, axis=-1)
  if soft_targets is None:
    nll = -jnp.take_along_axis(logp, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
  else:
    nll = -(soft_targets * logp).sum(-1)
  per_token = jnp.where(weights > 0, nll, 0.0) * weights
  if segment is not None:  # [B, L] -> [B, segments]: sums per (example, segment)
    onehot = jax.nn.one_hot(segment, segment.shape[-1] + 1, dtype=jnp.float32)
    count = jnp.einsum("bl,bls->bs", weights, onehot)
    summed = jnp.einsum("bl,bls->bs", per_token, onehot)
  else:
    count, summed = weights.sum(axis=-1), per_token.sum(axis=-1)
  scored = count > 0
  per_example = summed / jnp.maximum(count, 1e-9)
  examples = jnp.maximum(scored.sum(), 1)
  loss = jnp.where(scored, per_example, 0.0).sum() / examples
  hits = (jnp.argmax(logits, -1) == targets) * weights
  acc = hits.sum() / jnp.maximum(weights.sum(), 1e-9)
  return loss, acc, scored.sum()


@registry.OBJECTIVES.register("prefix_lm")
def prefix_lm_objective(loc_start: int = 0, num_bins: int = 0, loc_sigma: float = 0.0):
  """`outputs['logits'] [B, L, V]` against `batch['targets']` where `batch['loss_mask']`.
  `loc_sigma` > 0: location targets (ids `[loc_start, loc_start + num_bins)`) are Gaussians
  over neighbouring bins (soft_location_targets), not one-hot."""
  if loc_sigma < 0 or (loc_sigma > 0 and num_bins < 2):
    raise ValueError("prefix_lm: loc_sigma > 0 needs the location range (loc_start, num_bins)")

  def loss_fn(outputs, batch):
    logits = outputs["logits"]
    soft = None
    if loc_sigma > 0:
      soft = soft_location_targets(batch["targets"], logits.shape[-1], loc_start, num_bins,
                                   loc_sigma)
    loss, acc, _ = suffix_loss(logits, batch["targets"], batch["loss_mask"], soft,
                               batch.get("segment"))
    return loss, {"token_acc": acc}

  return loss_fn
