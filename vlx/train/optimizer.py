"""optax from config: AdamW, warmup + cosine, clipping, weight-decay mask, regex param groups.

Param groups (`optimizer.param_groups = [(regex, lr_mult), ...]`, first match wins)
scale a group's updates; `lr_mult = 0` freezes it with no optimizer state at all
(e.g. LiT's locked image tower: `[("img/.*", 0.0)]`).

Param bounds (`optimizer.param_bounds = [(regex, low, high), ...]`, plus those the
objectives declare, e.g. CLIP's `logit_scale <= ln 100`) project the matching
parameters into their range after every update, as open_clip clamps its logit scale.
"""

from __future__ import annotations

import math
import re
from typing import Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import optax

Bound = Tuple[str, Optional[float], Optional[float]]


def param_path(path) -> str:
  """('params', 'img', 'encoder', 'kernel') key path -> 'img/encoder/kernel'."""
  parts = []
  for k in path:
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
  return "/".join(parts)


def project_params(bounds: Sequence[Bound], params) -> optax.GradientTransformation:
  """Last link of the chain: rewrites each update so that `param + update` lands in the
  range of the first `(regex, low, high)` whose regex fully matches the param's path
  (`None` = unbounded).

  Clamping the parameter, not its use in the loss, keeps the loss's gradient alive at and
  beyond the bound: a clamp inside the loss has gradient 0 above it (Adam's momentum then
  carries the parameter past the bound, where it stays) and `jnp.minimum` halves it at the
  bound itself.
  """
  compiled = [(re.compile(r), lo, hi) for r, lo, hi in bounds]
  paths, treedef = jax.tree_util.tree_flatten_with_path(params)
  names = [param_path(path) for path, _ in paths]
  unmatched = [r.pattern for r, _, _ in compiled if not any(map(r.fullmatch, names))]
  if unmatched:
    raise ValueError(f"param_bounds: no parameter matches {unmatched}; params: {names}")
  # Per leaf (in flattening order): its (low, high), or None when unbounded.
  ranges = [next(((lo, hi) for r, lo, hi in compiled if r.fullmatch(n)), None) for n in names]

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("param_bounds need the params: call tx.update(grads, state, params)")
    flat_u, flat_p = treedef.flatten_up_to(updates), treedef.flatten_up_to(params)
    # new - p is exact when new lies within a factor of 2 of p (Sterbenz), so the applied
    # p + (new - p) lands on the bound itself.
    projected = [u if rng is None else (jnp.clip(p + u, rng[0], rng[1]) - p).astype(u.dtype)
                 for u, p, rng in zip(flat_u, flat_p, ranges)]
    return treedef.unflatten(projected), state

  return optax.GradientTransformation(lambda _: optax.EmptyState(), update_fn)


def make_schedule(cfg, total_steps):
  total = int(total_steps)
  warmup = min(int(cfg.warmup_steps), max(total - 1, 0))
  lr = float(cfg.lr)
  if cfg.schedule == "cosine":
    if not warmup:
      return optax.cosine_decay_schedule(lr, max(total, 1), cfg.end_lr_frac)
    return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(total, warmup + 1),
                                              lr * cfg.end_lr_frac)
  if cfg.schedule == "constant":
    if not warmup:
      return optax.constant_schedule(lr)
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup),
                                 optax.constant_schedule(lr)], [warmup])
  raise ValueError(f"unknown schedule {cfg.schedule!r}; known: cosine, constant")


def _groups(cfg):
  return [(re.compile(r), float(m)) for r, m in cfg.get("param_groups", ())]


def group_labels(cfg, params):
  """Each param's group (`group{i}`: the first `param_groups` regex it fully matches, or
  `default`)."""
  groups = _groups(cfg)

  def label(path, _):
    name = param_path(path)
    for i, (regex, _) in enumerate(groups):
      if regex.fullmatch(name):
        return f"group{i}"
    return "default"
  return jax.tree_util.tree_map_with_path(label, params)


def frozen_mask(cfg, params):
  """A bool per param: True where a group with lr_mult 0 holds it (the train step computes
  no gradient for those: vlx/train/step.py)."""
  frozen = {f"group{i}" for i, (_, mult) in enumerate(_groups(cfg)) if mult == 0}
  return jax.tree.map(lambda label: label in frozen, group_labels(cfg, params))


def num_trainable(cfg, params) -> int:
  """Parameters the optimizer updates: all but those of groups frozen with lr_mult 0."""
  return sum(int(math.prod(x.shape)) for x, locked in
             zip(jax.tree.leaves(params), jax.tree.leaves(frozen_mask(cfg, params)))
             if not locked)


def make_optimizer(cfg, params, total_steps=None, param_bounds: Sequence[Bound] = ()):
  """Returns (tx, schedule). `params` is any tree with the model's param structure;
  the schedule spans `total_steps` (the run's `config.total_steps`); `param_bounds` (the
  objectives' declared ones, after `cfg.param_bounds`) are projected onto after the update."""
  if total_steps is None:
    total_steps = cfg.get("total_steps", None)
  if total_steps is None:
    raise ValueError("make_optimizer needs total_steps (the run's config.total_steps)")
  schedule = make_schedule(cfg, total_steps)
  decay_re = re.compile(cfg.weight_decay_regex)
  wd_mask = jax.tree_util.tree_map_with_path(
      lambda p, _: bool(decay_re.search(param_path(p))), params)
  if cfg.name != "adamw":
    raise ValueError(f"unknown optimizer {cfg.name!r}; known: adamw")
  base = optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                     weight_decay=cfg.weight_decay, mask=wd_mask)
  groups = _groups(cfg)
  if groups:
    labels = group_labels(cfg, params)
    transforms = {"default": base}
    for i, (_, mult) in enumerate(groups):
      transforms[f"group{i}"] = optax.set_to_zero() if mult == 0 else optax.chain(
          base, optax.scale(mult))
    base = optax.multi_transform(transforms, labels)
  chain = [base]
  if cfg.clip_norm:
    chain.insert(0, optax.clip_by_global_norm(cfg.clip_norm))
    frozen = [f"group{i}" for i, (_, mult) in enumerate(groups) if mult == 0]
    if frozen:
      # Frozen towers' gradients must not count toward the clipping norm (LiT: a large image
      # gradient would otherwise shrink every text update), so they are zeroed first.
      chain.insert(0, optax.masked(optax.set_to_zero(),
                                   jax.tree.map(lambda l: l in frozen, labels)))
  bounds = [tuple(b) for b in cfg.get("param_bounds", ())] + [tuple(b) for b in param_bounds]
  if bounds:
    chain.append(project_params(bounds, params))
  return optax.chain(*chain), schedule
