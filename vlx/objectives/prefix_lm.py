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


def suffix_loss(logits, targets, loss_mask):
  """`logits [B, L, V]` (position i predicts `targets[:, i]`), `targets [B, L]`, `loss_mask
  [B, L]` (1 on suffix tokens) -> (loss: each example's mean over its scored tokens, then
  the mean over the examples that have any, token accuracy over scored tokens, number of
  those examples)."""
  logits = logits.astype(jnp.float32)
  weights = jnp.asarray(loss_mask, jnp.float32)
  logp = jax.nn.log_softmax(logits, axis=-1)
  nll = -jnp.take_along_axis(logp, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
  per_token = jnp.where(weights > 0, nll, 0.0) * weights
  count = weights.sum(axis=-1)
  scored = count > 0
  per_example = per_token.sum(axis=-1) / jnp.maximum(count, 1e-9)
  examples = jnp.maximum(scored.sum(), 1)
  loss = jnp.where(scored, per_example, 0.0).sum() / examples
  hits = (jnp.argmax(logits, -1) == targets) * weights
  acc = hits.sum() / jnp.maximum(weights.sum(), 1e-9)
  return loss, acc, scored.sum()


@registry.OBJECTIVES.register("prefix_lm")
def prefix_lm_objective():
  """`outputs['logits'] [B, L, V]` against `batch['targets']` where `batch['loss_mask']`."""

  def loss_fn(outputs, batch):
    loss, acc, _ = suffix_loss(outputs["logits"], batch["targets"], batch["loss_mask"])
    return loss, {"token_acc": acc}

  return loss_fn
