"""Multi-process training: 2 JAX processes x 4 CPU devices (gloo collectives) on one machine.

`experiments/launch_local.py` runs `configs/clip.py:smoke` (towers cut to one layer each,
so compiling takes seconds) for 20 steps as two cooperating processes. Checked:

- every process exits 0; only process 0 writes metrics.jsonl (each step once) and
  config.json; checkpoints are written; the evaluators run on the 8-device mesh that spans
  both processes;
- the losses of every step, and the eval metrics, are those of one process with 8 devices
  (the data order does not depend on the process count: see pipeline.TrainIterator);
- a 2-process run killed with SIGKILL (every process, mid-run, after a checkpoint) and
  started again with the same command resumes and logs the uninterrupted run's losses.

The runs are shared by the tests (and by pytest-xdist workers, through a file lock), so
the module costs four short runs. If a 2-process run fails because gloo CPU collectives
do not work here, the tests are skipped with the reason.
"""

import fcntl
import json
import os
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from vlx_testlib import (REPO, checkpoint_steps, read_metrics, shapes_data_dir,  # noqa: F401
                         shared_tmp_root, sigkill_after_checkpoint, train_losses)

REPO = str(REPO)
LAUNCH = os.path.join(REPO, "experiments", "launch_local.py")
# Kill after the first checkpoint: 15 steps of margin for the async save on a loaded machine.
STEPS, EVERY, KILL_AFTER = 20, 5, 5
RTOL = 1e-4
TIMEOUT_S = 300
EVALS = {"zeroshot": {"type": "zeroshot", "limit": 64},
         "retrieval": {"type": "retrieval", "limit": 64}}


def _overrides(data_dir, workdir):
  return ["--config=configs/clip.py:smoke", f"--workdir={workdir}",
          f"--config.data.source.data_dir={data_dir}",
          f"--config.total_steps={STEPS}", "--config.log_every=1",
          f"--config.checkpoint_every={EVERY}", f"--config.eval_every={STEPS}",
          "--config.model.image.depth=1", "--config.model.text.depth=1",
          f"--config.evals={EVALS!r}"]


def _mp_cmd(data_dir, workdir):
  return [sys.executable, LAUNCH, "--num_processes=2", "--devices_per_process=4",
          f"--timeout_s={TIMEOUT_S}", *_overrides(data_dir, workdir)]


def _env(**extra):
  env = dict(os.environ)
  # The suite's compile settings (tests/conftest.py), no device count: the launcher sets it.
  env["XLA_FLAGS"] = os.environ.get("VLX_TEST_XLA_FLAGS", "--xla_backend_optimization_level=0")
  env.pop("JAX_NUM_CPU_DEVICES", None)
  env.update(JAX_PLATFORMS="cpu", PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2", **extra)
  return env


def _max_rel(got, want):
  return max(abs(got[s] - want[s]) / abs(want[s]) for s in want)


_GLOO_PROBE = r"""
import sys, jax, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(coordinator_address="127.0.0.1:" + sys.argv[2], num_processes=2,
                           process_id=int(sys.argv[1]))
mesh = jax.make_mesh((jax.device_count(),), ("d",))
x = jax.make_array_from_process_local_data(NamedSharding(mesh, P("d")), np.ones(1, np.float32))
assert float(jax.jit(lambda x: x.sum(), out_shardings=NamedSharding(mesh, P()))(x)) == 2.0
"""


def _gloo_problem():
  """None if a 2-process gloo all-reduce works here, else why not."""
  if "jax_cpu_collectives_implementation" not in jax.config.values:
    return f"jax {jax.__version__} has no jax_cpu_collectives_implementation option"
  sys.path.insert(0, os.path.join(REPO, "experiments"))
  import launch_local  # pylint: disable=g-import-not-at-top
  port = str(launch_local.free_port())
  env = _env(JAX_NUM_CPU_DEVICES="1")
  procs = [subprocess.Popen([sys.executable, "-c", _GLOO_PROBE, str(i), port], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(2)]
  outs = []
  for p in procs:
    try:
      outs.append(p.communicate(timeout=60)[0])
    except subprocess.TimeoutExpired:
      p.kill()
      outs.append(p.communicate()[0] + "\n(timed out)")
  if any(p.returncode for p in procs):
    return "gloo CPU collectives unavailable: " + outs[0][-800:]
  return None


def _shared_run(root, name, make):
  """`make(workdir)` -> json-able result, run once per pytest session (all xdist workers)."""
  marker = root / f"multiprocess_{name}.json"
  with open(root / f"multiprocess_{name}.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      if not marker.exists():
        marker.write_text(json.dumps(make(str(root / f"multiprocess_{name}"))))
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)
  result = json.loads(marker.read_text())
  if result.get("skip"):
    pytest.skip(result["skip"])
  return result


def _run(cmd, workdir, **env):
  t = time.time()
  proc = subprocess.run(cmd, cwd=REPO, env=_env(**env), capture_output=True, text=True,
                        timeout=TIMEOUT_S + 60)
  return dict(workdir=workdir, returncode=proc.returncode, stdout=proc.stdout,
              stderr=proc.stderr, seconds=round(time.time() - t, 1))


@pytest.fixture(scope="module")
def mp(shapes_data_dir, tmp_path_factory, worker_id):
  """The uninterrupted 2-process x 4-device run."""
  def make(workdir):
    result = _run(_mp_cmd(shapes_data_dir, workdir), workdir)
    if result["returncode"] != 0:
      problem = _gloo_problem()
      if problem:
        result["skip"] = problem
    return result
  return _shared_run(shared_tmp_root(tmp_path_factory, worker_id), "mp", make)


@pytest.fixture(scope="module")
def sp(mp, shapes_data_dir, tmp_path_factory, worker_id):
  """The same config as one process with 8 devices."""
  def make(workdir):
    return _run([sys.executable, "-m", "vlx.main", *_overrides(shapes_data_dir, workdir)],
                workdir, JAX_NUM_CPU_DEVICES="8")
  return _shared_run(shared_tmp_root(tmp_path_factory, worker_id), "sp", make)


def _tail(run, n=4000):
  return (run["stdout"] + run["stderr"])[-n:]


def test_two_processes_train_and_evaluate(mp):
  assert mp["returncode"] == 0, _tail(mp)
  print(f"\n2-process run: {mp['seconds']}s")
  # Both processes ran, joined one 8-device job, and stepped to the end.
  out = mp["stdout"]
  assert "[p0]" in out and "[p1]" in out, out[-2000:]
  assert "per process: [0, 0]" in out, out[-2000:]
  assert "over 8 devices (2 processes)" in out, out[-2000:]

  # One writer: process 0. Each step appears exactly once, in order.
  rows = read_metrics(mp["workdir"])
  losses = train_losses(mp["workdir"])
  assert sorted(losses) == list(range(1, STEPS + 1))
  assert [r["step"] for r in rows if "train/loss" in r] == list(range(1, STEPS + 1))
  assert all(np.isfinite(v) for v in losses.values())
  assert os.path.exists(os.path.join(mp["workdir"], "config.json"))
  # Only process 0 prints the summary.
  lines = out.splitlines()
  assert sum(l.startswith("[p0] final metrics") for l in lines) == 1
  assert not any(l.startswith("[p1] final metrics") for l in lines)

  # The evaluators ran once, at the end, on the mesh spanning both processes.
  evals = [r for r in rows if "zeroshot/top1" in r]
  assert [r["step"] for r in evals] == [STEPS], evals
  assert evals[0]["retrieval/num_images"] == 64
  assert 0.0 <= evals[0]["zeroshot/top1"] <= 1.0

  # Checkpoints every EVERY steps (orbax keeps the last 3), committed.
  ckpt = os.path.join(mp["workdir"], "checkpoints")
  assert checkpoint_steps(mp["workdir"]) == [10, 15, 20]
  for step in (10, 15, 20):
    assert os.path.exists(os.path.join(ckpt, str(step), "state")), os.listdir(
        os.path.join(ckpt, str(step)))


def test_two_processes_log_the_losses_of_one_process(mp, sp):
  assert mp["returncode"] == 0, _tail(mp)
  assert sp["returncode"] == 0, _tail(sp)
  print(f"\n1-process run: {sp['seconds']}s")
  mp_losses, sp_losses = train_losses(mp["workdir"]), train_losses(sp["workdir"])
  assert sorted(sp_losses) == sorted(mp_losses) == list(range(1, STEPS + 1))
  print("step  1 process x 8  2 processes x 4")
  for s in sorted(mp_losses):
    print(f"{s:4d}  {sp_losses[s]:.6f}  {mp_losses[s]:.6f}")
  print(f"max relative difference {_max_rel(mp_losses, sp_losses):.2e}")
  np.testing.assert_allclose([mp_losses[s] for s in range(1, STEPS + 1)],
                             [sp_losses[s] for s in range(1, STEPS + 1)], rtol=RTOL)
  # Same model at the end -> the same eval metrics (one of 64 examples may flip on a tie).
  mp_evals = [r for r in read_metrics(mp["workdir"]) if "zeroshot/top1" in r][0]
  sp_evals = [r for r in read_metrics(sp["workdir"]) if "zeroshot/top1" in r][0]
  for k in ("zeroshot/top1", "zeroshot/top5", "retrieval/i2t_r1", "retrieval/t2i_r5"):
    assert abs(mp_evals[k] - sp_evals[k]) <= 1 / 64 + 1e-6, (k, mp_evals[k], sp_evals[k])


def _group_alive(pgid):
  """Pids of the non-zombie processes in process group `pgid`."""
  alive = []
  for d in os.listdir("/proc"):
    if not d.isdigit():
      continue
    try:
      with open(f"/proc/{d}/stat") as f:
        stat = f.read()
    except OSError:
      continue
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
    if int(fields[2]) == pgid and fields[0] != "Z":
      alive.append(int(d))
  return alive


def test_sigkill_all_processes_then_resume(mp, shapes_data_dir, tmp_path):
  assert mp["returncode"] == 0, _tail(mp)
  expected = train_losses(mp["workdir"])
  workdir = str(tmp_path / "killed")
  cmd = _mp_cmd(shapes_data_dir, workdir)
  t0 = time.time()
  with open(tmp_path / "killed.log", "w") as log:
    # Its own session: the launcher and both vlx processes share one process group.
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    sigkill_after_checkpoint(proc, workdir, KILL_AFTER, TIMEOUT_S, tmp_path / "killed.log")
  deadline = time.time() + 30
  while _group_alive(proc.pid):
    assert time.time() < deadline, f"processes survived SIGKILL: {_group_alive(proc.pid)}"
    time.sleep(0.1)
  partial = train_losses(workdir)
  killed_at = max(partial)
  assert KILL_AFTER <= killed_at < STEPS, sorted(partial)
  resume_from = max(checkpoint_steps(workdir))
  assert KILL_AFTER <= resume_from < STEPS, checkpoint_steps(workdir)

  t1 = time.time()
  restarted = _run(cmd, workdir)
  print(f"\nkilled at step {killed_at} ({t1 - t0:.0f}s), resumed from checkpoint {resume_from} "
        f"({restarted['seconds']}s)")
  assert restarted["returncode"] == 0, _tail(restarted)
  out = restarted["stdout"]
  for p in (0, 1):
    assert f"[p{p}]" in out and any(l.startswith(f"[p{p}]") and "resumed from" in l and
                                    l.endswith(f"step {resume_from}") for l in out.splitlines()), \
        out[-3000:]
  got = train_losses(workdir)  # also fails on a step logged twice
  assert sorted(got) == list(range(1, STEPS + 1))
  # The step-0 bookkeeping row is written once, by the first start only.
  assert [r["step"] for r in read_metrics(workdir)].count(0) == 1
  after = {s: expected[s] for s in expected if s > resume_from}
  print(f"final loss {got[STEPS]:.6f} vs uninterrupted {expected[STEPS]:.6f}; max relative "
        f"difference over steps {resume_from + 1}..{STEPS}: {_max_rel(got, after):.2e}")
  np.testing.assert_allclose(got[STEPS], expected[STEPS], rtol=RTOL)
  np.testing.assert_allclose([got[s] for s in range(1, STEPS + 1)],
                             [expected[s] for s in range(1, STEPS + 1)], rtol=RTOL)
