"""A run killed with SIGKILL and restarted with the same command reproduces the uninterrupted
run exactly; `init_from` loads weights only (fresh step and optimizer)."""

import fcntl
import os
import signal
import subprocess
import time

import jax
import numpy as np
import pytest

from vlx_testlib import (REPO, SHALLOW_CLIP, checkpoint_steps, main_cmd, no_evals,  # noqa: F401
                         read_metrics, restore_state, run_main, shapes_data_dir,
                         sigkill_after_checkpoint, subprocess_env, train_losses)

TOTAL, EVERY, KILL_AFTER = 40, 10, 20
ARGS = (f"--config.total_steps={TOTAL}", f"--config.checkpoint_every={EVERY}",
        "--config.log_every=1", *no_evals(), *SHALLOW_CLIP)


@pytest.fixture(scope="module")
def uninterrupted(shapes_data_dir, tmp_path_factory, worker_id):
  """The reference run, made once and shared by all xdist workers (file lock + marker)."""
  base = tmp_path_factory.getbasetemp()
  root = base.parent if worker_id != "master" else base
  workdir = root / "resume_uninterrupted"
  with open(root / "resume_uninterrupted.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      if not (root / "resume_uninterrupted.done").exists():
        run_main("clip", workdir, shapes_data_dir, *ARGS)
        (root / "resume_uninterrupted.done").touch()
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)
  return workdir


def test_sigkill_then_restart_matches_uninterrupted_run(uninterrupted, shapes_data_dir, tmp_path):
  expected = train_losses(uninterrupted)
  assert sorted(expected) == list(range(1, TOTAL + 1))

  workdir = tmp_path / "killed"
  cmd = main_cmd("clip", workdir, shapes_data_dir, *ARGS)
  log = open(tmp_path / "killed.log", "w")
  proc = subprocess.Popen(cmd, cwd=REPO, env=subprocess_env(), stdout=log,
                          stderr=subprocess.STDOUT, start_new_session=True)
  try:
    sigkill_after_checkpoint(proc, workdir, KILL_AFTER, 400)
  finally:
    log.close()
  partial = train_losses(workdir)
  assert KILL_AFTER in partial and max(partial) < TOTAL, sorted(partial)
  assert max(checkpoint_steps(workdir)) < TOTAL

  restarted = run_main("clip", workdir, shapes_data_dir, *ARGS)
  assert "resumed from" in restarted.stderr
  got = train_losses(workdir)  # also fails on a step logged twice
  assert sorted(got) == list(range(1, TOTAL + 1))
  for step in expected:
    np.testing.assert_allclose(got[step], expected[step], rtol=1e-6, atol=0,
                               err_msg=f"train/loss at step {step}")
  # The bookkeeping row of step 0 is written once, by the first start only.
  assert [r["step"] for r in read_metrics(workdir)].count(0) == 1

  # Same final state, bit for bit up to float tolerance.
  final_a, final_b = restore_state(uninterrupted, TOTAL), restore_state(workdir, TOTAL)
  assert int(final_a["step"]) == int(final_b["step"]) == TOTAL
  for a, b in zip(jax.tree.leaves(final_a["params"]), jax.tree.leaves(final_b["params"])):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-6, atol=1e-7)


def test_init_from_loads_weights_only(uninterrupted, shapes_data_dir, tmp_path):
  scratch = train_losses(uninterrupted)
  workdir = tmp_path / "finetune"
  # lr=0: whatever the run starts from is what its checkpoint holds.
  run_main("clip", workdir, shapes_data_dir, f"--config.init_from={uninterrupted}/checkpoints",
           "--config.total_steps=2", "--config.checkpoint_every=2", "--config.log_every=1",
           "--config.optimizer.lr=0.0", *no_evals(), *SHALLOW_CLIP)
  rows = read_metrics(workdir)
  assert rows[0]["step"] == 0 and "model/num_params" in rows[0], "must start at step 0"
  got = train_losses(workdir)
  assert sorted(got) == [1, 2]
  # Same seed -> same first batch as the source run's step 1, which started from scratch:
  # from scratch it would be exactly scratch[1] (the params are compared bit for bit below).
  assert got[1] < scratch[1] - 0.02, (got[1], scratch[1])

  assert checkpoint_steps(workdir) == [2]
  source, loaded = restore_state(uninterrupted, TOTAL), restore_state(workdir, 2)
  assert int(loaded["step"]) == 2, "init_from must not carry over the source's step"
  for a, b in zip(jax.tree.leaves(source["params"]), jax.tree.leaves(loaded["params"])):
    np.testing.assert_array_equal(np.asarray(b), np.asarray(a))
  # Fresh optimizer: after 2 steps its Adam moment count is 2, not TOTAL + 2.
  counts = [int(np.asarray(x)) for path, x in jax.tree_util.tree_leaves_with_path(
      loaded["opt_state"]) if "count" in jax.tree_util.keystr(path)]
  assert counts and all(c <= 2 for c in counts), counts


def _sigkill_while_saving(proc, workdir, timeout_s):
  """SIGKILLs `proc`'s group while orbax writes a checkpoint (a `<step>.orbax-checkpoint-tmp-*`
  dir exists and `<step>` does not), after at least one finished checkpoint. The group is
  SIGSTOPped first and the window re-checked while it is frozen, so the kill provably lands
  mid-write; a save that finished in between is let go and the next one tried. -> the step."""
  ckdir = os.path.join(workdir, "checkpoints")
  deadline = time.time() + timeout_s
  try:
    while True:
      assert proc.poll() is None, f"run ended (rc {proc.returncode}) before a kill mid-save"
      assert time.time() < deadline, f"no save caught in flight in {timeout_s} s"
      names = os.listdir(ckdir) if os.path.isdir(ckdir) else []
      if any(".orbax-checkpoint-tmp" in n for n in names) and any(n.isdigit() for n in names):
        os.killpg(proc.pid, signal.SIGSTOP)
        names = os.listdir(ckdir)
        writing = [int(n.split(".")[0]) for n in names if ".orbax-checkpoint-tmp" in n]
        writing = [s for s in writing if str(s) not in names]
        if writing:
          os.killpg(proc.pid, signal.SIGKILL)
          proc.wait()
          return writing[0]
        os.killpg(proc.pid, signal.SIGCONT)
      time.sleep(0.001)
  finally:
    if proc.poll() is None:
      os.killpg(proc.pid, signal.SIGKILL)
      proc.wait()


def test_sigkill_while_a_checkpoint_is_written_resumes_from_the_previous_one(
    uninterrupted, shapes_data_dir, tmp_path):
  expected = train_losses(uninterrupted)
  workdir = tmp_path / "killed_mid_save"
  # A checkpoint every 2 steps gives many saves to catch in flight; the losses do not depend
  # on how often the run checkpoints.
  args = [a if not a.startswith("--config.checkpoint_every") else "--config.checkpoint_every=2"
          for a in ARGS]
  cmd = main_cmd("clip", workdir, shapes_data_dir, *args)
  with open(tmp_path / "killed.log", "w") as log:
    proc = subprocess.Popen(cmd, cwd=REPO, env=subprocess_env(), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    killed_at = _sigkill_while_saving(proc, workdir, 400)
  assert proc.returncode == -signal.SIGKILL
  left = os.listdir(workdir / "checkpoints")
  assert str(killed_at) not in left and any(n.startswith(f"{killed_at}.orbax-checkpoint-tmp")
                                            for n in left), left
  previous = max(checkpoint_steps(workdir))
  assert previous < killed_at < TOTAL, (previous, killed_at)

  # The restart checkpoints only at the end, so it never writes the killed step again: the
  # half-written directory must be cleaned up, not merely replaced by a new save of that step.
  restarted = run_main("clip", workdir, shapes_data_dir, *ARGS,
                       f"--config.checkpoint_every={TOTAL}")
  assert f"resumed from {workdir / 'checkpoints'} step {previous}" in restarted.stderr, \
      restarted.stderr[-3000:]
  got = train_losses(workdir)
  assert sorted(got) == list(range(1, TOTAL + 1))
  for step in expected:
    np.testing.assert_allclose(got[step], expected[step], rtol=1e-6, atol=0,
                               err_msg=f"train/loss at step {step}")
  left = os.listdir(workdir / "checkpoints")
  assert not any("orbax-checkpoint-tmp" in n for n in left), left
  assert killed_at not in checkpoint_steps(workdir) and TOTAL in checkpoint_steps(workdir)
