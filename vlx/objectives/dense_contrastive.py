"""The dense contrastive losses on [B, D] embeddings: the global [B, B] logits at once.

They are what the objectives compute when the batch fits (contrastive.py) and the reference
the ring forms are tested equal to (ring.py, tests/test_ring_losses.py); both import them
from here, so neither imports the other's module back.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def similarities(img, txt):
  """Cosines `[B_img, B_txt]` of `img [B, D]` with `txt [B, D]`, or with `txt [B_img, B_txt, D]`
  when each text embedding depends on the image it meets (X-CLIP's video-specific prompts)."""
  img, txt = img.astype(jnp.float32), txt.astype(jnp.float32)
  if txt.ndim == 3:
    return jnp.einsum("id,itd->it", img, txt)
  return img @ txt.T


def softmax_contrastive_dense(img, txt, log_scale, label_smoothing=0.0, soft_targets=None):
  """Symmetric InfoNCE on [B, D] embeddings (or per-image texts, see `similarities`); the
  reference for the ring form.

  `soft_targets` = (image->text [B, B], text->image [B, B]) replaces the one-hot targets
  (ALBEF's momentum distillation mixes the teacher's softmax into them)."""
  logits = jnp.exp(log_scale) * similarities(img, txt)
  n = logits.shape[0]
  if soft_targets is not None:
    targets_i2t, targets_t2i = soft_targets
  else:
    targets_i2t = targets_t2i = optax.smooth_labels(jax.nn.one_hot(jnp.arange(n), n),
                                                    label_smoothing) \
        if label_smoothing else jax.nn.one_hot(jnp.arange(n), n)
  i2t = optax.softmax_cross_entropy(logits, targets_i2t).mean()
  t2i = optax.softmax_cross_entropy(logits.T, targets_t2i).mean()
  return 0.5 * (i2t + t2i)


def sigmoid_dense(img, txt, log_scale, bias):
  """SigLIP's pairwise sigmoid loss, summed over texts and averaged over images."""
  logits = jnp.exp(log_scale) * similarities(img, txt) + bias
  n = logits.shape[0]
  labels = 2.0 * jnp.eye(n) - 1.0
  return -jnp.sum(jax.nn.log_sigmoid(labels * logits)) / n
