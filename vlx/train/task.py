"""The task contract: what a model family hands the one train step.

The step (vlx/train/step.py) owns what every family shares: gradients and their
accumulation, the optimizer update and the finite guard. Everything that differs between
families reaches it through a `Task`:

  init_extras(params)            state of the task's own next to the params (a moving average
                                 of them, a queue, a reference policy), created from the params
                                 at init and again after `init_from` loads weights
  extras_shardings(param_sh)     how that state is laid out on the mesh
  prepare(params, extras, batch, step, rng)
                                 work on the batch before the loss, without gradient (a
                                 curriculum's transform, rollouts sampled from the current
                                 policy `params`, noise timesteps)
  outputs(params, extras, batch, rng)
                                 the forward pass; only `params` receive gradients, anything
                                 read from `extras` is a constant of the step
  loss(outputs, batch)           -> (scalar, {name: metric}), pure
  update_extras(extras, params, step)
                                 the task state after an applied update (the step keeps the
                                 old state when the update was not finite)
  param_bounds                   bounds the optimizer projects parameters into after each
                                 update (the contrastive temperature's)
  accumulates                    whether `outputs` may be split into micro-batches
                                 (GradCache, accum_steps > 1)
  evaluators                     the registered evaluators the family's model answers, or
                                 None for any: a config asking another is refused by name

A family with nothing of its own uses `ModelTask` (a registered model's forward and the
config's weighted objectives) by leaving `config.task` at its default; one that needs more
registers a task under a name (`registry.TASKS`) and sets `config.task` to it. Either way
the step, the loop and the checkpoints stay as they are: the extras are part of the train
state, sharded and checkpointed with it.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Protocol, Sequence, Tuple, runtime_checkable

import jax

from vlx import registry
from vlx.objectives.combine import build_objectives
from vlx.train import curriculum

Batch = Dict[str, jax.Array]
Outputs = Dict[str, Any]

DEFAULT_TASK = "model"


@runtime_checkable
class Task(Protocol):
  """What the train step calls (see the module docstring for what each one is for)."""
  param_bounds: Sequence[Any]
  accumulates: bool
  evaluators: Optional[Sequence[str]]

  def init_extras(self, params) -> Dict[str, Any]: ...

  def extras_shardings(self, param_shardings) -> Dict[str, Any]: ...

  def prepare(self, params, extras, batch: Batch, step: jax.Array, rng: jax.Array
              ) -> Batch: ...

  def outputs(self, params, extras, batch: Batch, rng: jax.Array) -> Outputs: ...

  def loss(self, outputs: Outputs, batch: Batch) -> Tuple[jax.Array, Dict[str, jax.Array]]: ...

  def update_extras(self, extras, params, step: jax.Array) -> Dict[str, Any]: ...


@registry.TASKS.register(DEFAULT_TASK)
class ModelTask:
  """A registered model's forward (`model.apply`, dropout rng from the step) scored by the
  config's weighted objectives, with the config's curriculum applied to the batch first.
  No state of its own. Families with more to do subclass it or write their own."""
  accumulates = True
  evaluators = None

  def __init__(self, config, model):
    self.model = model
    self.loss = build_objectives(config.objectives)
    self.param_bounds = self.loss.param_bounds
    self._transform = curriculum.build(config.get("curriculum"), config.total_steps)

  def init_extras(self, params) -> Dict[str, Any]:
    del params
    return {}

  def extras_shardings(self, param_shardings) -> Dict[str, Any]:
    del param_shardings
    return {}

  def prepare(self, params, extras, batch, step, rng):
    del params, extras
    return batch if self._transform is None else self._transform(batch, step, rng)

  def apply(self, params, batch, rng, method=None):
    """The model in training mode with `params` (a method of it, or a function taking it)."""
    return self.model.apply({"params": params}, batch, train=True, rngs={"dropout": rng},
                            method=method)

  def outputs(self, params, extras, batch, rng):
    del extras
    return self.apply(params, batch, rng)

  def update_extras(self, extras, params, step):
    del params, step
    return extras


def build_task(config, model) -> Task:
  """The task `config.task` names (default: `ModelTask`), built for `model`."""
  task = registry.TASKS.get(config.get("task", DEFAULT_TASK))(config, model)
  if not isinstance(task, Task):
    missing = [m for m in ("param_bounds", "accumulates", "evaluators", "init_extras",
                           "extras_shardings", "prepare", "outputs", "loss", "update_extras")
               if not hasattr(task, m)]
    raise TypeError(f"task {config.get('task')!r} does not implement the task contract "
                    f"(vlx/train/task.py): missing {', '.join(missing)}")
  return task


def check_evaluators(config, task: Task) -> None:
  """Every evaluator `config.evals` asks for is one the task offers (one line if not)."""
  if task.evaluators is None:
    return
  for name, ecfg in config.evals.items():
    kind = ecfg.get("type", name)
    if kind not in task.evaluators:
      raise ValueError(
          f"config.evals.{name}: evaluator {kind!r} is not one that task "
          f"{config.get('task', DEFAULT_TASK)!r} offers (offers: "
          f"{', '.join(sorted(task.evaluators))})")

