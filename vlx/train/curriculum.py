"""Step-dependent batch transforms applied inside the train step (pure, jittable).

`grayscale`: hides colour early in training. A contrastive model finds colour
first and then stalls on shape (colour alone separates most in-batch negatives);
with colour removed from the images for the first part of training, the loss
can only fall by learning shape, size and position. The probability of a
grayscale image falls linearly from 1 at `start` to 0 at `end` (fractions of
total steps).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vlx import registry


def _ramp(step, total, start, end):
  t = step / jnp.maximum(total, 1)
  return jnp.clip((end - t) / jnp.maximum(end - start, 1e-6), 0.0, 1.0)


@registry.CURRICULA.register("grayscale")
def grayscale(total_steps: int, start: float = 0.0, end: float = 0.3, key: str = "image"):
  def transform(batch, step, rng):
    images = batch[key]
    p = jnp.where(step / max(total_steps, 1) < start, 1.0, _ramp(step, total_steps, start, end))
    gray = jnp.broadcast_to(images.mean(-1, keepdims=True), images.shape)
    pick = jax.random.uniform(rng, (images.shape[0],) + (1,) * (images.ndim - 1)) < p
    return {**batch, key: jnp.where(pick, gray, images)}
  return transform


def build(curricula_config, total_steps: int):
  """{name: kwargs} -> one transform(batch, step, rng) applying each in order (or None)."""
  fns = []
  for name, kwargs in (curricula_config or {}).items():
    fns.append(registry.CURRICULA.get(name)(total_steps=total_steps, **dict(kwargs)))
  if not fns:
    return None

  def transform(batch, step, rng):
    for i, f in enumerate(fns):
      batch = f(batch, step, jax.random.fold_in(rng, i))
    return batch
  return transform
