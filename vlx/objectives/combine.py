"""The objective combiner: a config's `{name: weight or {weight, **kwargs}}` -> one pure
`(outputs, batch) -> (loss, metrics)` for the train step.

It knows objectives only by their registered names; what one needs from the optimizer (a
bound on a parameter such as the contrastive temperature) it declares with `declare_bounds`
and the combiner gathers for make_optimizer.
"""

from __future__ import annotations

from vlx import registry


def declare_bounds(loss_fn, bounds):
  """Attaches the parameter bounds an objective needs; build_objectives gathers them and
  the trainer hands them to make_optimizer, which projects after each update."""
  loss_fn.param_bounds = tuple(bounds)
  return loss_fn


def build_objectives(objectives_config):
  """{name: weight or {weight, **kwargs}} -> pure `(outputs, batch) -> (loss, metrics)`.

  The total is the weighted sum; every objective's own loss and metrics are
  reported under its name so a config can be debugged term by term. Its
  `param_bounds` gather the terms' (for make_optimizer).
  """
  terms, bounds = [], []
  for name, spec in objectives_config.items():
    if isinstance(spec, (int, float)):
      weight, kwargs = float(spec), {}
    else:
      kwargs = dict(spec)
      weight = float(kwargs.pop("weight", 1.0))
    fn = registry.OBJECTIVES.get(name)(**kwargs)
    terms.append((name, weight, fn))
    bounds += [b for b in getattr(fn, "param_bounds", ()) if b not in bounds]
  if not terms:
    raise ValueError("config.objectives is empty: nothing to train")

  def total_loss(outputs, batch):
    total = 0.0
    metrics = {}
    for name, weight, fn in terms:
      loss, m = fn(outputs, batch)
      total = total + weight * loss
      metrics[f"{name}/loss"] = loss
      metrics.update({f"{name}/{k}": v for k, v in m.items()})
    return total, metrics

  # What the optimizer must enforce for these terms (make_optimizer's param_bounds).
  return declare_bounds(total_loss, bounds)
