"""Fault paths of a workdir, through `python -m vlx.main`: each fails with one line (exit 2) or
recovers, and none changes what it must not.

- a damaged newest checkpoint: resume from the newest one that restores, naming the bad one;
- a metrics.jsonl cut off by a kill mid-line: the cut-off last line is dropped;
- rerunning a finished workdir: nothing changes (no duplicate eval rows);
- rerunning with a changed model key: refused before config.json is touched, naming the key;
- a workdir that is a file.
"""

import fcntl
import json
import os
import shutil

import numpy as np
import pytest

from vlx.train import metrics_writer
from vlx_testlib import (SHALLOW_CLIP, read_metrics, run_main, shapes_data_dir,  # noqa: F401
                         shared_tmp_root, train_losses)

TOTAL, EVERY = 4, 2
# One layer per tower (SHALLOW_CLIP): these tests are about the workdir (checkpoints,
# metrics.jsonl, config.json), not the model's depth; every run here uses the same ARGS.
ARGS = (f"--config.total_steps={TOTAL}", f"--config.checkpoint_every={EVERY}",
        "--config.log_every=1", f"--config.eval_every={TOTAL}",
        "--config.evals={'retrieval': {'type': 'retrieval'}}", *SHALLOW_CLIP)


@pytest.fixture(scope="module")
def finished(shapes_data_dir, tmp_path_factory, worker_id):
  """A finished smoke run (checkpoints 2 and 4, an eval at 4), made once for all workers."""
  root = shared_tmp_root(tmp_path_factory, worker_id)
  workdir = root / "faults_finished"
  with open(root / "faults_finished.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      if not (root / "faults_finished.done").exists():
        shutil.rmtree(workdir, ignore_errors=True)
        run_main("clip", workdir, shapes_data_dir, *ARGS)
        (root / "faults_finished.done").touch()
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)
  return workdir


def _copy(finished, tmp_path):
  workdir = tmp_path / "w"
  shutil.copytree(finished, workdir)
  return workdir


def _one_error_line(proc, prefix="vlx: error:"):
  assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  lines = [l for l in proc.stderr.splitlines() if l.startswith(prefix)]
  assert len(lines) == 1, proc.stderr[-3000:]
  return lines[0]


def _truncate_largest_data_file(step_dir):
  files = [os.path.join(d, n) for d, _, names in os.walk(os.path.join(step_dir, "state"))
           for n in names]
  biggest = max(files, key=os.path.getsize)
  with open(biggest, "r+b") as f:
    f.truncate(os.path.getsize(biggest) // 2)


def _tree_snapshot(workdir):
  """Every file's path and bytes (so "nothing changed" is checked, not assumed)."""
  out = {}
  for d, _, names in os.walk(workdir):
    for n in names:
      path = os.path.join(d, n)
      with open(path, "rb") as f:
        out[os.path.relpath(path, workdir)] = f.read()
  return out


def test_rerunning_a_finished_workdir_changes_nothing(finished, shapes_data_dir, tmp_path):
  workdir = _copy(finished, tmp_path)
  assert sum("retrieval/seconds" in r for r in read_metrics(workdir)) == 1
  before = _tree_snapshot(workdir)
  proc = run_main("clip", workdir, shapes_data_dir, *ARGS)
  assert "is complete" in proc.stderr, proc.stderr[-2000:]
  assert _tree_snapshot(workdir) == before  # metrics.jsonl byte-identical, no new files
  # The summary still reports the finished run's final metrics.
  assert "retrieval/" in proc.stdout and "train/loss" in proc.stdout, proc.stdout


def test_a_changed_model_key_is_refused_before_config_json_changes(finished, shapes_data_dir,
                                                                    tmp_path):
  workdir = _copy(finished, tmp_path)
  before = _tree_snapshot(workdir)
  proc = run_main("clip", workdir, shapes_data_dir, *ARGS, "--config.model.embed_dim=64",
                  check=False)
  line = _one_error_line(proc)
  assert "model.embed_dim" in line and "64" in line, line
  assert _tree_snapshot(workdir) == before
  # Keys that may change on resume (length of the run, learning rate) are accepted.
  proc = run_main("clip", workdir, shapes_data_dir, *ARGS, "--config.total_steps=5",
                  "--config.optimizer.lr=5e-4", "--config.eval_every=100")
  assert sorted(train_losses(workdir)) == [1, 2, 3, 4, 5]
  with open(workdir / "config.json") as f:
    assert json.load(f)["total_steps"] == 5


def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(finished, shapes_data_dir,
                                                                  tmp_path):
  expected = train_losses(finished)
  workdir = _copy(finished, tmp_path)
  _truncate_largest_data_file(workdir / "checkpoints" / str(TOTAL))
  proc = run_main("clip", workdir, shapes_data_dir, *ARGS)
  # No traceback: the failed reads' noise (tensorstore's threads print one per read still in
  # flight, thousands of lines) is captured by the restore (vlx/train/checkpoint.py).
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  warnings = [l for l in proc.stderr.splitlines() if "WARNING" in l and
              str(workdir / "checkpoints" / str(TOTAL)) in l]
  assert warnings, proc.stderr[-3000:]
  assert "resumed from" in proc.stderr and f"step {EVERY}" in proc.stderr
  got = train_losses(workdir)
  assert sorted(got) == list(range(1, TOTAL + 1))
  for step in range(EVERY + 1, TOTAL + 1):
    np.testing.assert_allclose(got[step], expected[step], rtol=1e-6, err_msg=f"step {step}")
  # The damaged one is kept aside (nothing is deleted); a new step-4 checkpoint replaced it.
  assert os.listdir(workdir / "checkpoints_set_aside") == [f"{TOTAL}-damaged"]
  assert sum("retrieval/seconds" in r for r in read_metrics(workdir)) == 1


def test_no_checkpoint_that_restores_is_one_line(finished, shapes_data_dir, tmp_path):
  workdir = _copy(finished, tmp_path)
  for step in (EVERY, TOTAL):
    _truncate_largest_data_file(workdir / "checkpoints" / str(step))
  before = _tree_snapshot(workdir)
  proc = run_main("clip", workdir, shapes_data_dir, *ARGS, check=False)
  line = _one_error_line(proc)
  assert "no checkpoint" in line and "restores" in line, line
  after = _tree_snapshot(workdir)
  changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
  assert not changed, changed


def test_a_metrics_line_cut_off_by_a_kill_is_dropped_on_restart(finished, shapes_data_dir,
                                                                tmp_path):
  expected = train_losses(finished)
  workdir = _copy(finished, tmp_path)
  # As a kill while step 3's row was being written leaves it: checkpoint 2 is the newest,
  # and the file ends in the middle of a row.
  shutil.rmtree(workdir / "checkpoints" / str(TOTAL))
  with open(workdir / "metrics.jsonl") as f:
    lines = f.readlines()
  kept = [l for l in lines if json.loads(l)["step"] <= EVERY]
  row3 = [l for l in lines if json.loads(l)["step"] == EVERY + 1][0]
  with open(workdir / "metrics.jsonl", "w") as f:
    f.writelines(kept)
    f.write(row3[:len(row3) // 2])
  proc = run_main("clip", workdir, shapes_data_dir, *ARGS)
  assert "cut-off last line" in proc.stderr, proc.stderr[-3000:]
  got = train_losses(workdir)
  assert sorted(got) == list(range(1, TOTAL + 1))
  for step in got:
    np.testing.assert_allclose(got[step], expected[step], rtol=1e-6, err_msg=f"step {step}")


def test_a_corrupt_metrics_line_in_the_middle_is_named(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": 1}\n{"step": 2, "x": \n{"step": 3}\n{"step": 4, "y"')
  with pytest.raises(ValueError, match=r"metrics.jsonl line 2 is not a JSON row"):
    metrics_writer.read_rows(str(path))
  path.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "y"')
  assert [r["step"] for r in metrics_writer.read_rows(str(path))] == [1, 2]


def test_a_workdir_that_is_a_file_is_one_line(shapes_data_dir, tmp_path):
  path = tmp_path / "a_file"
  path.write_text("not a directory\n")
  line = _one_error_line(run_main("clip", path, shapes_data_dir, *ARGS, check=False))
  assert "is a file" in line and str(path) in line, line
  assert path.read_text() == "not a directory\n"


def test_a_repeated_evaluation_replaces_its_rows(tmp_path):
  """--mode=eval run twice on one checkpoint leaves one row of results for that step."""
  writer = metrics_writer.MetricsWriter(str(tmp_path), resume_step=None,
                                        filename="eval_metrics.jsonl", tensorboard=False)
  writer.replace(4, {"retrieval/r1": 0.5})
  writer.replace(6, {"retrieval/r1": 0.6})
  writer.replace(4, {"retrieval/r1": 0.7})
  rows = metrics_writer.read_rows(str(tmp_path / "eval_metrics.jsonl"))
  assert rows == [{"step": 6, "retrieval/r1": 0.6}, {"step": 4, "retrieval/r1": 0.7}]


def test_config_keys_that_may_change_on_resume():
  from vlx.train import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  saved = {"total_steps": 4, "optimizer": {"lr": 1e-3, "name": "adamw"},
           "model": {"embed_dim": 32, "text": {"vocab_size": 256}}, "evals": {"a": {"k": 1}}}
  new = {"total_steps": 8, "optimizer": {"lr": 1e-4, "name": "adamw"},
         "model": {"embed_dim": 64, "text": {}}, "evals": {}, "seed": 1}
  assert workdir_lib.config_differences(saved, new) == [
      ("model.embed_dim", 32, 64), ("model.text", "<missing>", {}),
      ("model.text.vocab_size", 256, "<missing>"), ("seed", "<missing>", 1)]


def test_legacy_config_json_resumes_against_the_config_as_given(tmp_path):
  """A config.json written before it recorded the config that ran (no `imports` key, the
  vocabulary as given) still resumes with the same command; a current one must match the
  fitted config."""
  import copy  # pylint: disable=g-import-not-at-top
  from vlx import config_lib  # pylint: disable=g-import-not-at-top
  from vlx.train import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  from vlx_testlib import REPO  # pylint: disable=g-import-not-at-top
  given = config_lib.load_config_file(f"{REPO}/configs/clip.py:smoke")
  fitted = copy.deepcopy(given)
  fitted.model.text.vocab_size = given.model.text.vocab_size + 8  # what fit_vocab may do
  legacy = workdir_lib.config_as_json(given)
  del legacy["imports"], legacy["task"]  # neither key existed then
  (tmp_path / "config.json").write_text(json.dumps(legacy))
  workdir_lib.check_resumable(str(tmp_path), fitted, given)  # the same command resumes
  with pytest.raises(ValueError, match="model.text.vocab_size"):
    workdir_lib.check_resumable(str(tmp_path), fitted)
  (tmp_path / "config.json").write_text(json.dumps(workdir_lib.config_as_json(fitted)))
  workdir_lib.check_resumable(str(tmp_path), fitted, given)
  with pytest.raises(ValueError, match="model.text.vocab_size"):
    workdir_lib.check_resumable(str(tmp_path), given, given)


def test_restore_noise_from_other_threads_becomes_one_warning(capfd, caplog):
  """What tensorstore's threads print at the file descriptor during a failed restore goes to
  a file named by one warning; without a failure it is passed through untouched."""
  import threading  # pylint: disable=g-import-not-at-top
  from vlx.train import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top

  def noisy():
    for _ in range(50):
      os.write(2, b"Traceback (most recent call last):\n  RuntimeError: Event loop is closed\n")

  with ckpt_lib._stderr_captured() as path:  # pylint: disable=protected-access
    thread = threading.Thread(target=noisy)
    thread.start()
    thread.join()
  ckpt_lib._report_restore_noise(path, [(4, "ValueError: bad read")], ["/w/checkpoints/4"])
  assert "Traceback" not in capfd.readouterr().err
  assert "/w/checkpoints/4 does not restore (ValueError: bad read)" in caplog.text
  assert f"printed 100 lines (tracebacks from tensorstore's threads), kept in {path}" in \
      caplog.text
  with open(path) as f:
    assert f.read().count("Event loop is closed") == 50
  os.remove(path)
  with ckpt_lib._stderr_captured() as path:  # pylint: disable=protected-access
    os.write(2, b"orbax says hello\n")
  ckpt_lib._report_restore_noise(path, [], [])
  assert capfd.readouterr().err == "orbax says hello\n" and not os.path.exists(path)
  # Interrupted inside the capture: what was printed is shown, nothing is left behind.
  with pytest.raises(KeyboardInterrupt):
    with ckpt_lib._stderr_captured() as path:  # pylint: disable=protected-access
      os.write(2, b"half a restore\n")
      raise KeyboardInterrupt
  assert capfd.readouterr().err == "half a restore\n" and not os.path.exists(path)
