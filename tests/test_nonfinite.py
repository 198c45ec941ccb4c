"""A NaN/Inf loss stops the run with exit status 3 and one line naming the step and the
checkpoint written before the divergence, which then trains on at a sane learning rate."""

import os
import re

import jax
import numpy as np
import optax

from vlx import config_lib
from vlx import build
from vlx.train import trainer
from vlx.train.step import make_train_step
from vlx.train.task import build_task
from vlx_testlib import (REPO, SHALLOW_CLIP, checkpoint_steps, no_evals, read_metrics,  # noqa: F401
                         run_main, shapes_data_dir, train_losses)


def test_exploding_lr_names_a_checkpoint_that_trains_on_at_a_sane_lr(shapes_data_dir, tmp_path):
  workdir = tmp_path / "w"
  total = 8
  # lr=1e30: update 1 has lr 0 (warmup), update 2 leaves finite weights near 5e29 (so
  # checkpoint 2 looks clean), and the loss of update 3, computed from them, is Inf.
  args = (f"--config.total_steps={total}", "--config.log_every=1",
          "--config.checkpoint_every=1", "--config.keep_checkpoints=1", *no_evals(),
          *SHALLOW_CLIP)
  proc = run_main("clip", workdir, shapes_data_dir, "--config.optimizer.lr=1e30", *args,
                  check=False)
  assert proc.returncode == 3, (proc.returncode, proc.stderr[-3000:])
  assert "Traceback" not in proc.stderr
  line = [l for l in proc.stderr.splitlines() if l.startswith("vlx: stopped:")]
  assert len(line) == 1, proc.stderr[-3000:]
  bad_step = int(re.search(r"first at step (\d+)", line[0]).group(1))
  resume = int(re.search(r"--config.resume_step=(\d+)", line[0]).group(1))
  assert bad_step == 3 and resume == 1, line[0]

  # Every logged loss is finite and precedes the bad step.
  logged = {r["step"]: r["train/loss"] for r in read_metrics(workdir) if "train/loss" in r}
  assert sorted(logged) == list(range(1, bad_step)) and all(map(np.isfinite, logged.values()))
  # The named checkpoint survives although keep_checkpoints=1 (the newest is unverified).
  assert resume in checkpoint_steps(workdir), checkpoint_steps(workdir)

  # The named checkpoint trains on at a sane learning rate, through the key the line names.
  again = run_main("clip", workdir, shapes_data_dir, "--config.optimizer.lr=1e-3",
                   f"--config.resume_step={resume}", *args, check=False)
  assert again.returncode == 0, again.stderr[-3000:]
  assert "resumed from" in again.stderr
  losses = train_losses(workdir)
  assert sorted(losses) == list(range(1, total + 1)), sorted(losses)
  assert all(np.isfinite(v) and v < 10 for v in losses.values()), losses
  # The first resumed update starts from checkpoint `resume` on the same batch: same loss.
  np.testing.assert_allclose(losses[resume + 1], logged[resume + 1], rtol=1e-6)
  # The diverged checkpoint was moved aside, not deleted, and the new run wrote its own.
  assert sorted(os.listdir(workdir / "checkpoints_set_aside")) == ["2-after-resume-step"]
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  mngr = ocp.CheckpointManager(os.path.abspath(workdir / "checkpoints"))
  state = jax.device_get(mngr.restore(total, args=ocp.args.Composite(
      state=ocp.args.PyTreeRestore()))["state"])
  mngr.close()
  assert int(state["nonfinite"]) == 0
  assert all(np.abs(np.asarray(x)).max() < 1e3 for x in jax.tree.leaves(state["params"]))


def test_train_step_leaves_state_untouched_on_nan():
  config = config_lib.load_config_file(f"{REPO}/configs/clip.py:smoke")
  config_lib.apply_overrides(config, [
      ("model.image.depth", "1"), ("model.text.depth", "1"), ("model.image.width", "64"),
      ("model.text.width", "64"), ("model.embed_dim", "32"), ("data.image_size", "32"),
      ("data.max_len", "16"), ("model.text.max_len", "16"), ("batch_size", "8")])
  model = build.build_model(config)
  tx = optax.adam(1e-2)
  mesh = trainer.mesh_lib.make_mesh(config.mesh, devices=jax.devices()[:1])
  rules = trainer.mesh_lib.rules_from_config(config.sharding)
  state, _ = trainer.create_state(config, model, tx, mesh, rules)
  step = jax.jit(make_train_step(build_task(config, model), tx,
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
  assert int(after_bad.nonfinite) == 1 and int(after_bad.step) == 1  # the first bad step
  for a, b in zip(jax.tree.leaves((before.params, before.opt_state)),
                  jax.tree.leaves((after_bad.params, after_bad.opt_state))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

  after_good, metrics = jax.device_get(step(after_bad, good))
  assert np.isfinite(metrics["train/loss"]) and int(after_good.nonfinite) == 1  # still step 1
  changed = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before.params),
                                                      jax.tree.leaves(after_good.params))]
  assert any(changed), "a finite step must update the params"
