"""The task contract (vlx/train/task.py) as the train step uses it, with a task of the test's
own: the step prepares the batch, hands the task's extras to its forward as constants,
updates them only after a finite update, and refuses micro-batches a task cannot split.
Plus the fusion task: its passes and the model's plain forward create the same parameters.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from vlx import build, registry
from vlx.families.fusion import task as fusion_task
from vlx.parallel import mesh as mesh_lib
from vlx.train.step import TrainState, make_train_step
from vlx.train.task import ModelTask, build_task
from vlx_testlib import shapes_data_dir  # noqa: F401  (fixture)
from test_fusion import FAMILIES, _config


class Linear(nn.Module):
  @nn.compact
  def __call__(self, batch, train=True):
    del train
    return {"y": nn.Dense(1)(batch["x"])[:, 0]}


class CountingTask(ModelTask):
  """Extras: how many updates were applied, and the first parameter's running sum; `prepare`
  shifts the targets by the step, so the loss shows that it ran before the forward."""

  def __init__(self, accumulates=True):  # pylint: disable=super-init-not-called
    self.model = Linear()
    self.param_bounds = ()
    self.accumulates = accumulates
    self.seen_extras = []

  def loss(self, outputs, batch):
    err = outputs["y"] - batch["t"]
    return jnp.mean(err ** 2) + 0.0 * outputs["applied"], {"applied": outputs["applied"]}

  def init_extras(self, params):
    return {"applied": jnp.zeros((), jnp.int32), "sum": jax.tree.map(jnp.zeros_like, params)}

  def prepare(self, params, extras, batch, step, rng):
    return {**batch, "t": batch["t"] + step.astype(jnp.float32)}

  def outputs(self, params, extras, batch, rng):
    return {**self.apply(params, batch, rng), "applied": extras["applied"].astype(jnp.float32)}

  def update_extras(self, extras, params, step):
    return {"applied": extras["applied"] + 1,
            "sum": jax.tree.map(jnp.add, extras["sum"], params)}


def _state(task, tx):
  x = jnp.ones((4, 3))
  params = task.model.init(jax.random.key(0), {"x": x})["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                    rng=jax.random.key(1), nonfinite=jnp.zeros((), jnp.int32),
                    extras=task.init_extras(params))


def test_step_runs_every_stage_of_the_task_and_keeps_extras_on_a_bad_update():
  task, tx = CountingTask(), optax.sgd(0.1)
  step = jax.jit(make_train_step(task, tx, optax.constant_schedule(0.1)))
  state = _state(task, tx)
  x = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
  batch = {"x": x, "t": np.zeros(4, np.float32)}
  state, m0 = step(state, batch)
  state, m1 = step(state, batch)
  assert int(state.extras["applied"]) == 2
  # The forward read the extras as they were before each update.
  assert float(m0["train/applied"]) == 0 and float(m1["train/applied"]) == 1
  assert jax.tree.structure(state.extras["sum"]) == jax.tree.structure(state.params)
  before = jax.device_get(state)
  bad = {**batch, "x": np.full_like(x, np.nan)}
  state, _ = step(state, bad)
  assert int(state.nonfinite) == 3
  assert int(state.extras["applied"]) == 2  # the extras of a skipped update are the old ones
  for a, b in zip(jax.tree.leaves(before.extras), jax.tree.leaves(jax.device_get(state.extras))):
    np.testing.assert_array_equal(a, b)


def test_prepare_runs_before_the_loss():
  task, tx = CountingTask(), optax.sgd(0.0)
  step = jax.jit(make_train_step(task, tx, optax.constant_schedule(0.0)))
  state = _state(task, tx)
  batch = {"x": np.zeros((4, 3), np.float32), "t": np.zeros(4, np.float32)}
  losses = []
  for _ in range(3):  # lr 0, zero inputs: y = bias = 0, targets = step -> loss = step ** 2
    state, m = step(state, batch)
    losses.append(float(m["train/loss"]))
  assert losses == [0.0, 1.0, 4.0]


def test_a_task_that_cannot_split_refuses_micro_batches():
  with pytest.raises(ValueError, match="cannot split its forward into micro-batches"):
    make_train_step(CountingTask(accumulates=False), optax.sgd(0.1),
                    optax.constant_schedule(0.1), accum_steps=2)


def test_unknown_task_and_incomplete_task_are_one_line():
  config = ml_collections.ConfigDict(dict(task="contrastve", objectives={}))
  with pytest.raises(KeyError, match="unknown task 'contrastve'.*known: .*fusion.*model"):
    build_task(config, Linear())

  @registry.TASKS.register("test_half_a_task")
  class HalfATask:  # pylint: disable=unused-variable
    param_bounds = ()

    def __init__(self, config, model):
      pass

    def loss(self, outputs, batch):
      return 0.0, {}
  config.task = "test_half_a_task"
  with pytest.raises(TypeError, match="missing accumulates, evaluators, init_extras, "
                                      "extras_shardings, prepare, outputs, update_extras"):
    build_task(config, Linear())


@pytest.mark.parametrize("family", ["uniter"])  # regions + MRM: every head the passes use
def test_fusion_forward_creates_the_parameters_the_training_passes_use(shapes_data_dir, family):
  """`init` runs the model's plain forward; the fusion task trains with its own passes (masked
  caption, hard negatives): both must create exactly the same parameters with equal values,
  or a checkpoint, a converter or predict would see a different model than training does."""
  config = _config(family, shapes_data_dir)
  handle = build.sources.load_dataset(config.data)
  build.fit_vocab(config, handle)
  model = build.build_model(config)
  batch = {k: v[:2] for k, v in build.dummy_batch(config).items()}
  mesh = mesh_lib.make_mesh(config.mesh, devices=jax.devices()[:1])
  with jax.set_mesh(mesh), nn.logical_axis_rules(mesh_lib.rules_from_config(config.sharding)):
    plain = jax.jit(lambda r: model.init(r, batch, train=False))(jax.random.key(0))
    passes = jax.jit(lambda r: model.init(r, batch, train=False,
                                          method=fusion_task.training_passes))(jax.random.key(0))
  assert jax.tree.structure(plain) == jax.tree.structure(passes)
  for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(passes)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert isinstance(build_task(config, model), fusion_task.FusionTask)
  assert family in FAMILIES


def test_a_config_json_from_before_the_task_key_still_resumes():
  """Workdirs written before configs named their task (and ALBEF's named its teacher's
  method) resume; a saved task that differs from the config's is still refused."""
  from vlx.train import workdir  # pylint: disable=g-import-not-at-top
  new = {"task": "fusion", "ema": {"decay": 0.995}, "model": {"name": "fusion"}}
  saved = {"ema": {"decay": 0.995, "teacher_method": "momentum_outputs"},
           "model": {"name": "fusion"}}
  retired = fusion_task.FusionTask.retired_config_keys
  assert workdir.config_differences(saved, new, retired) == []
  assert workdir.config_differences(saved, new) == [
      ("ema.teacher_method", "momentum_outputs", "<missing>")]
  assert workdir.config_differences({**saved, "task": "model"}, new, retired) == [
      ("task", "model", "fusion")]


def test_a_config_json_from_before_an_added_option_resumes_only_at_its_old_behaviour():
  """A GRPO workdir written before `rollout.keep_prompts` / `track_kl` existed resumes with
  them at the values that do what it did, and is refused with dynamic sampling on."""
  from vlx.families.video_lmm.grpo import GRPOTask  # pylint: disable=g-import-not-at-top
  from vlx.train import workdir  # pylint: disable=g-import-not-at-top
  saved = {"task": "grpo", "rollout": {"group_size": 8}}
  new = {"task": "grpo", "rollout": {"group_size": 8, "keep_prompts": 0, "track_kl": False}}
  added = GRPOTask.added_config_keys
  assert workdir.config_differences(saved, new, (), added) == []
  assert workdir.config_differences(saved, new) != []
  on = {**new, "rollout": {**new["rollout"], "keep_prompts": 4, "track_kl": True}}
  assert workdir.config_differences(saved, on, (), added) == [
      ("rollout.keep_prompts", 0, 4), ("rollout.track_kl", False, True)]


def test_an_evaluator_the_family_does_not_offer_is_named():
  from vlx.train.task import check_evaluators  # pylint: disable=g-import-not-at-top
  config = ml_collections.ConfigDict(dict(task="fusion", evals=dict(
      vqa=dict(type="vqa"), zs=dict(type="zeroshot", limit=8))))
  with pytest.raises(ValueError, match="config.evals.zs: evaluator 'zeroshot' is not one that "
                                       "task 'fusion' offers .offers: grounding, itm_retrieval, "
                                       "vqa"):
    check_evaluators(config, fusion_task.FusionTask)
  del config.evals["zs"]
  check_evaluators(config, fusion_task.FusionTask)
  check_evaluators(config, CountingTask())  # None: any evaluator
