"""THE train step: one function for every model family.

`train_step(state, batch) -> (state, metrics)`: forward, weighted objectives,
gradients (optionally GradCache-accumulated so contrastive negatives stay those
of the full batch; none computed for the parameters a frozen group locks, so
`train/grad_norm` is the trainable parameters'), optax update, and a finite guard:
an update whose loss or (trainable) gradient is NaN/Inf, or that would make a
parameter NaN/Inf, leaves the state untouched and records its step, so the trainer
can stop and name it.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

import flax
import jax
import jax.numpy as jnp
import optax



@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array
  # The step (1-based) of the first update skipped for a NaN/Inf loss, gradient or new
  # parameter; 0 while every update has been finite. An int32 scalar, as checkpoints store it.
  nonfinite: jax.Array
  extras: Dict[str, Any]      # the task's own state (vlx/train/task.py): param copies, queues


def _micro_batches(batch, accum: int):
  """[B, ...] -> [accum, B/accum, ...], strided so each micro-batch spans every device."""
  def split(x):
    b = x.shape[0]
    if b % accum:
      raise ValueError(f"batch {b} is not divisible by accum_steps={accum}")
    x = x.reshape((b // accum, accum) + x.shape[1:])
    return jnp.swapaxes(x, 0, 1)
  return jax.tree.map(split, batch)


def _join(xs):
  return jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), xs)


def constants_of(frozen: Optional[Any]) -> Callable:
  """`params -> params` with each leaf that `frozen` (a bool per leaf, or None) marks wrapped
  in stop_gradient: differentiation then treats it as a constant, so XLA never computes the
  weight gradients the optimizer would throw away (a locked tower's backward pass still
  carries the gradient through its activations to any adapter below, but skips its `dW`
  matmuls, about a third of a dense layer's training FLOPs)."""
  if frozen is None or not any(jax.tree.leaves(frozen)):
    return lambda params: params
  return lambda params: jax.tree.map(
      lambda p, f: jax.lax.stop_gradient(p) if f else p, params, frozen)


def make_train_step(task, tx: optax.GradientTransformation, schedule: Callable,
                    accum_steps: int = 1, frozen: Optional[Any] = None):
  """Builds the (unjitted) train step for `task` (vlx/train/task.py); the trainer jits it
  with shardings. The task's extras are constants of the forward and are updated by the
  task after each applied update; no model family has a branch here. `frozen`: a bool per
  param leaf (vlx/train/optimizer.py: frozen_mask), the leaves no gradient is computed for;
  their gradient is zero (the optimizer's lr_mult 0 groups leave them unchanged anyway)."""
  if accum_steps > 1 and not task.accumulates:
    raise ValueError(f"{type(task).__name__} cannot split its forward into micro-batches: "
                     "use accum_steps=1")
  loss_fn = task.loss
  constants = constants_of(frozen)

  def grads_direct(params, extras, batch, rng):
    def objective(p):
      return loss_fn(task.outputs(constants(p), extras, batch, rng), batch)
    (loss, metrics), grads = jax.value_and_grad(objective, has_aux=True)(params)
    return loss, metrics, grads

  def grads_gradcache(params, extras, batch, rng):
    """GradCache: embed all micro-batches without gradients, take the loss gradient
    w.r.t. the embeddings over the full batch, then backprop each micro-batch."""
    def forward(p, mb, r):
      return task.outputs(constants(p), extras, mb, r)
    micro = _micro_batches(batch, accum_steps)

    def embed(_, xs):
      i, mb = xs
      return None, jax.lax.stop_gradient(forward(params, mb, jax.random.fold_in(rng, i)))
    _, outs = jax.lax.scan(embed, None, (jnp.arange(accum_steps), micro))
    if any(not jnp.issubdtype(x.dtype, jnp.floating) for x in jax.tree.leaves(outs)):
      # A model that returns integer targets (match labels, masked-token targets) draws its
      # hard negatives per forward: per micro-batch they would not be the global batch's.
      raise ValueError("accum_steps > 1 (GradCache) needs a model whose outputs are all "
                       "embeddings or logits; this one returns integer targets: use "
                       "accum_steps=1")
    # Per-example outputs are joined; shared scalars (temperature) are equal across micro-batches.
    full_out = {k: (v[0] if v.ndim == 1 else _join(v)) for k, v in outs.items()}
    full_batch = _join(micro)
    (loss, metrics), d_out = jax.value_and_grad(loss_fn, has_aux=True)(full_out, full_batch)
    per_micro = {k: (v if v.ndim == 0 else v.reshape((accum_steps, -1) + v.shape[1:]))
                 for k, v in d_out.items()}

    def backprop(grads, xs):
      i, mb = xs
      _, vjp = jax.vjp(lambda p: forward(p, mb, jax.random.fold_in(rng, i)), params)
      # A shared scalar's cotangent is applied once, not once per micro-batch.
      cot = {k: (jnp.where(i == 0, v, jnp.zeros_like(v)) if v.ndim == 0 else v[i])
             for k, v in per_micro.items()}
      g, = vjp(cot)
      return jax.tree.map(jnp.add, grads, g), None
    zeros = jax.tree.map(jnp.zeros_like, params)
    grads, _ = jax.lax.scan(backprop, zeros, (jnp.arange(accum_steps), micro))
    return loss, metrics, grads

  compute_grads = grads_direct if accum_steps == 1 else grads_gradcache

  def train_step(state: TrainState, batch):
    rng = jax.random.fold_in(state.rng, state.step)
    # Without gradient: `compute_grads` differentiates its own forward of `state.params`, and
    # the prepared batch (rollouts of the current policy, say) is a constant of it.
    batch = task.prepare(state.params, state.extras, batch, state.step,
                         jax.random.fold_in(rng, 1 << 20))
    loss, metrics, grads = compute_grads(state.params, state.extras, batch, rng)
    grad_norm = optax.global_norm(grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    params_finite = jnp.all(jnp.stack([jnp.isfinite(p).all() for p in jax.tree.leaves(params)
                                       if jnp.issubdtype(p.dtype, jnp.inexact)] or [True]))
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & params_finite
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)  # noqa: E731
    extras = keep(task.update_extras(state.extras, params, state.step), state.extras)
    new_state = state.replace(
        step=state.step + 1,
        params=keep(params, state.params),
        opt_state=keep(opt_state, state.opt_state),
        extras=extras,
        nonfinite=jnp.where((state.nonfinite == 0) & ~finite, state.step + 1,
                            state.nonfinite).astype(jnp.int32))
    out = {"train/loss": loss, "train/grad_norm": grad_norm,
           "train/lr": schedule(state.step),
           **{f"train/{k}": v for k, v in metrics.items()}}
    return new_state, out

  return train_step

