"""Sharding and gradient accumulation change how a step is computed, never what it computes.

* a 20-step run on 1 device and on an 8-device data=2 x fsdp=2 x tensor=2 mesh logs the
  same train/loss at every step (subprocesses);
* one train step on a 1-device mesh and on the 8-device mesh gives equal params (in-process);
* GradCache (accum_steps=2) gives the loss and gradients of the un-accumulated step.
"""

import jax
import ml_collections
import numpy as np
import optax
import pytest

from vlx import config_lib
from vlx.parallel import mesh as mesh_lib
from vlx import build
from vlx.train import trainer
from vlx_testlib import (REPO, SHALLOW_CLIP, assert_trees_close, mesh_of, no_evals,  # noqa: F401
                         one_train_step, run_main, shapes_data_dir, train_losses)

MESH_222 = ("--config.mesh.data=2", "--config.mesh.fsdp=2", "--config.mesh.tensor=2")


def test_sharded_run_logs_same_losses_as_single_device(shapes_data_dir, tmp_path):
  common = ("--config.total_steps=20", "--config.log_every=1", "--config.batch_size=16",
            "--config.checkpoint_every=1000", *no_evals(), *SHALLOW_CLIP)
  one, eight = tmp_path / "d1", tmp_path / "d8"
  run_main("clip", one, shapes_data_dir, *common, num_devices=1)
  run_main("clip", eight, shapes_data_dir, *common, *MESH_222, num_devices=8)
  l1, l8 = train_losses(one), train_losses(eight)
  assert sorted(l1) == list(range(1, 21)), sorted(l1)
  assert sorted(l8) == sorted(l1)
  for step in l1:
    assert np.isfinite(l1[step])
    np.testing.assert_allclose(l8[step], l1[step], rtol=1e-4, err_msg=f"step {step}")
  # The run must have trained at all, or equal losses would prove little.
  assert l1[20] < l1[1] - 0.2, l1


# ---- In-process: the trainer's own pieces -------------------------------------------------


def _config(family="clip", **over):
  config = config_lib.load_config_file(f"{REPO}/configs/{family}.py:smoke")
  # Small and shallow: compile time, not arithmetic, dominates on CPU.
  base = {"model.image.depth": 1, "batch_size": 16,
          "model.image.width": 64, "model.text.width": 64, "model.embed_dim": 32,
          "data.image_size": 32, "data.max_len": 16, "model.text.max_len": 16}
  if family == "coca":
    base.update({"model.text.unimodal_depth": 1, "model.text.multimodal_depth": 1,
                 "model.caption_queries": 8})
  else:
    base["model.text.depth"] = 1
  base.update(over)
  config_lib.apply_overrides(config, [(k, str(v)) for k, v in base.items()])
  return config


def _batch(config, seed=0):
  rng = np.random.default_rng(seed)
  b, s, l = config.batch_size, config.data.image_size, config.data.max_len
  image = rng.uniform(-1, 1, (b, s, s, 3)).astype(np.float32)
  text = np.zeros((b, l), np.int32)
  for i in range(b):
    n = int(rng.integers(3, l - 1))
    text[i, :n] = rng.integers(3, config.model.text.vocab_size, n)
    text[i, n] = 2  # EOS, then padding
  return {"image": image, "text": text}


def _init(config, tx):
  """The trainer's model and sharded TrainState, initialized on a 1-device mesh."""
  model = build.build_model(config)
  rules = mesh_lib.rules_from_config(config.sharding)
  state, _ = trainer.create_state(config, model, tx, mesh_of(1, 1, 1, 1), rules)
  return model, jax.device_get(state)


@pytest.mark.parametrize("family", ["siglip", "coca"])
def test_one_step_equal_on_1_and_8_device_meshes(family):
  """SigLIP: MAP head + bias; CoCa: contrastive + captioning losses, decoder layers."""
  assert jax.device_count() >= 8, "conftest should provide 8 CPU devices"
  config = _config(family)
  batch = _batch(config)
  tx = optax.sgd(1.0)  # params - grads: compares the gradients themselves
  model, state = _init(config, tx)
  p0_1 = state.params
  p1_1, m1 = one_train_step(config, model, state, mesh_of(1, 1, 1, 1), tx, batch)
  p1_8, m8 = one_train_step(config, model, state, mesh_of(2, 2, 2, 8), tx, batch)
  np.testing.assert_allclose(m8["train/loss"], m1["train/loss"], rtol=1e-5)
  np.testing.assert_allclose(m8["train/grad_norm"], m1["train/grad_norm"], rtol=1e-4)
  assert_trees_close(p1_1, p1_8, atol=2e-5, rtol=1e-4, what="after step")
  # The step moved the params (else equality would be vacuous).
  moved = max(float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(p0_1),
                                                          jax.tree.leaves(p1_1)))
  assert moved > 1e-3


@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_gradcache_accumulation_matches_full_batch(family):
  config = _config(family)
  batch = _batch(config, seed=1)
  tx = optax.sgd(1.0)
  mesh = mesh_of(1, 1, 1, 1)
  model, state = _init(config, tx)
  p0 = state.params
  p_full, m_full = one_train_step(config, model, state, mesh, tx, batch, accum_steps=1)
  p_acc, m_acc = one_train_step(config, model, state, mesh, tx, batch, accum_steps=2)
  np.testing.assert_allclose(m_acc["train/loss"], m_full["train/loss"], rtol=1e-6, atol=1e-5)
  np.testing.assert_allclose(m_acc["train/grad_norm"], m_full["train/grad_norm"], rtol=1e-5)
  # sgd(1): new params = params - grads, so this compares every gradient leaf.
  g_full = jax.tree.map(lambda a, b: a - b, p0, p_full)
  g_acc = jax.tree.map(lambda a, b: a - b, p0, p_acc)
  assert_trees_close(g_full, g_acc, atol=1e-5, what=f"{family} grads")
  # Shared scalars (temperature, bias) get their gradient once, not once per micro-batch.
  assert abs(float(g_full["logit_scale"])) > 1e-6
  np.testing.assert_allclose(g_acc["logit_scale"], g_full["logit_scale"], rtol=1e-4, atol=1e-6)
  if family == "siglip":
    np.testing.assert_allclose(g_acc["logit_bias"], g_full["logit_bias"], rtol=1e-4, atol=1e-6)


def test_param_groups_freeze_and_scale_on_shardedmesh_of():
  """LiT-style locked tower (lr_mult 0) and a faster group (lr_mult 10) on a 2x2x2 mesh:
  optimizer-state shardings follow the params through optax's masked multi_transform."""
  from vlx.train.optimizer import make_optimizer  # pylint: disable=g-import-not-at-top
  config = _config("siglip", **{"optimizer.warmup_steps": 0, "optimizer.clip_norm": 0.0})
  batch = _batch(config, seed=2)
  groups = (("img/.*", 0.0), ("logit_.*", 10.0))
  runs = {}
  for name, param_groups in (("plain", ()), ("grouped", groups)):
    config.optimizer.param_groups = param_groups
    model = build.build_model(config)
    rules = mesh_lib.rules_from_config(config.sharding)
    boxed = build.abstract_params(config, model, mesh_of(2, 2, 2, 8), rules)
    tx, _ = make_optimizer(config.optimizer, mesh_lib.unbox(boxed), total_steps=10)
    state, shardings = trainer.create_state(config, model, tx, mesh_of(2, 2, 2, 8), rules, boxed)
    # Moments of a sharded kernel are sharded like it; counts are replicated.
    flat = {jax.tree_util.keystr(p): s for p, s in
            jax.tree_util.tree_flatten_with_path(shardings.opt_state)[0]}
    assert any(s.spec != mesh_lib.replicated(s.mesh).spec for s in flat.values()), flat
    state = jax.device_get(state)
    runs[name] = (state.params,
                  *one_train_step(config, model, state, mesh_of(2, 2, 2, 8), tx, batch))
  p0, p1, _ = runs["grouped"]
  for a, b in zip(jax.tree.leaves(p0["img"]), jax.tree.leaves(p1["img"])):
    np.testing.assert_array_equal(a, b)  # locked: not one bit moved
  assert max(float(np.abs(a - b).max()) for a, b in
             zip(jax.tree.leaves(p0["txt"]), jax.tree.leaves(p1["txt"]))) > 0
  # Adam's first step moves each scalar by ~lr (sign of its gradient); x10 in its group.
  plain_move = abs(float(runs["plain"][1]["logit_bias"] - runs["plain"][0]["logit_bias"]))
  grouped_move = abs(float(p1["logit_bias"] - p0["logit_bias"]))
  np.testing.assert_allclose(grouped_move, 10 * plain_move, rtol=1e-3)


def test_frozen_group_gradients_do_not_count_toward_clipping():
  """LiT: a frozen tower's (large) gradient must not shrink the trainable tower's update."""
  import jax.numpy as jnp
  from vlx.presets.base import base_config  # pylint: disable=g-import-not-at-top
  from vlx.train.optimizer import make_optimizer
  cfg = base_config().optimizer
  params = {"img": {"w": jnp.ones((4,))}, "txt": {"w": jnp.ones((4,))}}
  grads = {"img": {"w": jnp.full((4,), 1e3)}, "txt": {"w": jnp.full((4,), 0.1)}}
  with cfg.unlocked():
    cfg.param_groups = (("img/.*", 0.0),)
    cfg.eps = 1.0  # Adam with a large eps is not scale invariant, so clipping shows
    cfg.warmup_steps, cfg.schedule = 0, "constant"
  tx, _ = make_optimizer(cfg, params, total_steps=10)
  updates, _ = tx.update(grads, tx.init(params), params)
  alone = ml_collections.ConfigDict(cfg.to_dict())
  alone.param_groups = ()
  tx_alone, _ = make_optimizer(alone, {"txt": params["txt"]}, total_steps=10)
  ref, _ = tx_alone.update({"txt": grads["txt"]}, tx_alone.init({"txt": params["txt"]}),
                           {"txt": params["txt"]})
  np.testing.assert_array_equal(np.asarray(updates["img"]["w"]), 0.0)
  np.testing.assert_allclose(np.asarray(updates["txt"]["w"]), np.asarray(ref["txt"]["w"]),
                             rtol=1e-6)
  # Counted in the clip, the 1e3 image gradient would scale the text update by ~1e-3.
  assert float(optax.global_norm(grads)) > 100 and float(np.abs(ref["txt"]["w"]).min()) > 0
