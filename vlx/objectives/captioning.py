"""Captioning: next-token cross-entropy under teacher forcing, padding masked out.

The model returns `caption_logits` [B, L, V] whose position i predicts `text[:, i]`
(its decoder saw [BOS, t0 .. t_{i-1}]); padding (id 0) after the caption's EOS
contributes nothing, so the loss is the mean over real tokens of the global batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from vlx import registry
from vlx.token_ids import PAD_ID


def caption_loss(logits, targets, label_smoothing: float = 0.0):
  """-> (mean loss over non-padding targets, token accuracy, number of tokens)."""
  logits = logits.astype(jnp.float32)
  mask = (targets != PAD_ID).astype(jnp.float32)
  onehot = jax.nn.one_hot(targets, logits.shape[-1])
  if label_smoothing:
    onehot = optax.smooth_labels(onehot, label_smoothing)
  per_token = optax.softmax_cross_entropy(logits, onehot)
  num = jnp.maximum(mask.sum(), 1.0)
  loss = jnp.sum(per_token * mask) / num
  acc = jnp.sum((jnp.argmax(logits, -1) == targets) * mask) / num
  return loss, acc, mask.sum()


@registry.OBJECTIVES.register("captioning")
def captioning_objective(label_smoothing: float = 0.0):
  """CoCa / SimVLM-style captioning loss on `outputs['caption_logits']` vs `batch['text']`."""

  def loss_fn(outputs, batch):
    loss, acc, _ = caption_loss(outputs["caption_logits"], batch["text"], label_smoothing)
    return loss, {"token_acc": acc}

  return loss_fn
