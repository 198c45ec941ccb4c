"""A NaN/Inf loss stops the run with exit status 3, and no bad state ever reaches a checkpoint."""

import os
import re

import jax
import numpy as np
import optax

from vlx import config_lib
from vlx.objectives.contrastive import build_objectives
from vlx.train import trainer
from vlx.train.step import make_train_step
from vlx_testlib import (REPO, checkpoint_steps, no_evals, read_metrics, run_main,  # noqa: F401
                         shapes_data_dir)


def test_exploding_lr_exits_3_and_keeps_checkpoints_clean(shapes_data_dir, tmp_path):
  workdir = tmp_path / "w"
  # lr=1e30: the first update with a non-zero lr blows the weights up and the next forward
  # pass overflows; a checkpoint is attempted after every step.
  proc = run_main("clip", workdir, shapes_data_dir, "--config.optimizer.lr=1e30",
                  "--config.total_steps=12", "--config.log_every=1",
                  "--config.checkpoint_every=1", *no_evals(), check=False)
  assert proc.returncode == 3, (proc.returncode, proc.stderr[-3000:])
  assert "Traceback" not in proc.stderr
  line = [l for l in proc.stderr.splitlines() if l.startswith("vlx: stopped:")]
  assert len(line) == 1, proc.stderr[-3000:]
  assert "non-finite" in line[0] and "lower the learning rate" in line[0], line[0]
  bad_step = int(re.search(r"at or before step (\d+)", line[0]).group(1))
  assert 1 < bad_step < 12, line[0]

  # Every logged loss is finite and precedes the bad step; with log_every=1 the check ran
  # after every step, so the bad step is exactly the first one not logged.
  logged = [r for r in read_metrics(workdir) if "train/loss" in r]
  assert [r["step"] for r in logged] == list(range(1, bad_step))
  assert all(np.isfinite(r["train/loss"]) for r in logged)

  steps = checkpoint_steps(workdir)
  assert steps, "the good steps before the blow-up should have been checkpointed"
  assert max(steps) < bad_step, (steps, bad_step)
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  mngr = ocp.CheckpointManager(os.path.abspath(workdir / "checkpoints"))
  state = jax.device_get(mngr.restore(max(steps), args=ocp.args.Composite(
      state=ocp.args.PyTreeRestore()))["state"])
  mngr.close()
  assert int(state["nonfinite"]) == 0
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state["params"]))
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state["opt_state"]))


def test_train_step_leaves_state_untouched_on_nan():
  config = config_lib.load_config_file(f"{REPO}/configs/clip.py:smoke")
  config_lib.apply_overrides(config, [
      ("model.image.depth", "1"), ("model.text.depth", "1"), ("model.image.width", "64"),
      ("model.text.width", "64"), ("model.embed_dim", "32"), ("data.image_size", "32"),
      ("data.max_len", "16"), ("model.text.max_len", "16"), ("batch_size", "8")])
  model = trainer.build_model(config)
  tx = optax.adam(1e-2)
  mesh = trainer.mesh_lib.make_mesh(config.mesh, devices=jax.devices()[:1])
  rules = trainer.mesh_lib.rules_from_config(config.sharding)
  state, _ = trainer.create_state(config, model, tx, mesh, rules)
  step = jax.jit(make_train_step(model, build_objectives(config.objectives), tx,
                                 optax.constant_schedule(1e-2)))
  rng = np.random.default_rng(0)
  text = np.zeros((8, 16), np.int32)
  text[:, :5] = rng.integers(3, 200, (8, 5))
  text[:, 5] = 2
  good = {"image": rng.uniform(-1, 1, (8, 32, 32, 3)).astype(np.float32), "text": text}
  bad = {**good, "image": np.where(np.arange(32)[None, :, None, None] == 3, np.nan,
                                   good["image"]).astype(np.float32)}

  before = jax.device_get(state)
  after_bad, metrics = jax.device_get(step(state, bad))
  assert not np.isfinite(metrics["train/loss"]), "the NaN batch must give a NaN loss"
  assert int(after_bad.nonfinite) == 1 and int(after_bad.step) == 1
  for a, b in zip(jax.tree.leaves((before.params, before.opt_state)),
                  jax.tree.leaves((after_bad.params, after_bad.opt_state))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

  after_good, metrics = jax.device_get(step(after_bad, good))
  assert np.isfinite(metrics["train/loss"]) and int(after_good.nonfinite) == 1
  changed = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before.params),
                                                      jax.tree.leaves(after_good.params))]
  assert any(changed), "a finite step must update the params"
