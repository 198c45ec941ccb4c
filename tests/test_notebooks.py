"""The notebooks in colabs/ run top to bottom, so a broken notebook fails CI.

Each notebook is executed with nbclient in a fresh Jupyter kernel (this interpreter) in a
temporary directory, with `VLX_NOTEBOOK_TINY=1` picking its tiny setting (seconds of
compute instead of minutes). A check cell appended after the last cell prints what the
notebook computed, as one `VLX_CHECK <json>` line, and the test asserts on it: a notebook
that runs but computes nonsense fails too. The committed notebooks must carry no outputs.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time

import pytest

from vlx_testlib import REPO, shapes_data_dir, suite_xla_flags  # noqa: F401

COLABS = REPO / "colabs"
NOTEBOOKS = ("zero_shot_pretrained", "train_tiny_clip", "meshes_and_sharding")
CELL_TIMEOUT_S = 300
CHECK_PREFIX = "VLX_CHECK "

# Appended to each notebook under test; reads the kernel's variables, prints one JSON line.
CHECK_CELLS = {
    "zero_shot_pretrained": """
import json as _json
import numpy as _np
print("VLX_CHECK " + _json.dumps({
    "probs": _np.asarray(probs, _np.float64).tolist(), "classes": CLASSES, "images": names,
    "random_weights": RANDOM_WEIGHTS, "logit_bias": model.logit_bias,
    "manual_matches": bool(_np.allclose(manual, one_template, atol=1e-5)),
    "image_emb_norms": _np.linalg.norm(img_emb, axis=-1).tolist()}))
""",
    "train_tiny_clip": """
import json as _json
print("VLX_CHECK " + _json.dumps({"workdir": WORKDIR, "total_steps": config.total_steps,
                                  "gallery": len(gallery), "query_sims_shape": list(sims.shape)}))
""",
    "meshes_and_sharding": """
import json as _json
print("VLX_CHECK " + _json.dumps({
    "device_count": jax.device_count(), "matmul_match": matmul_match, "matmul_diff": matmul_diff,
    "step_match": step_match, "param_diff": param_diff, "moved": moved,
    "losses": [loss_single, loss_sharded],
    "per_device_bytes": per_device}))
""",
}


def _load(name):
  with open(COLABS / f"{name}.ipynb", encoding="utf-8") as f:
    return json.load(f)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_has_no_outputs(name):
  """Outputs belong to a run, not to the repository (they would go stale and bloat diffs)."""
  nb = _load(name)
  assert nb["nbformat"] == 4
  code = [c for c in nb["cells"] if c["cell_type"] == "code"]
  assert code, f"{name}: no code cells"
  for cell in code:
    assert not cell.get("outputs") and cell.get("execution_count") is None, (
        f"{name}: cell {cell.get('id')} has stored outputs; clear them before committing")


def test_readme_lists_every_notebook():
  readme = (COLABS / "README.md").read_text(encoding="utf-8")
  for name in NOTEBOOKS:
    assert f"{name}.ipynb" in readme, f"colabs/README.md does not mention {name}.ipynb"


def _kernel_env(monkeypatch, tmp_path, name, data_dir):
  """The kernel inherits this process's environment: set it up for the notebook."""
  from ipykernel.kernelspec import write_kernel_spec  # pylint: disable=g-import-not-at-top
  # A 'python3' kernel spec that runs *this* interpreter, found first on JUPYTER_PATH: an
  # installed spec saying plain `python` could start another environment's Python.
  kernels = tmp_path / "jupyter"
  write_kernel_spec(path=str(kernels / "kernels" / "python3"))
  monkeypatch.setenv("JUPYTER_PATH", str(kernels))
  monkeypatch.setenv("VLX_NOTEBOOK_TINY", "1")
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
  monkeypatch.setenv("PYTHONUNBUFFERED", "1")
  monkeypatch.setenv("VLX_REPO", str(REPO))
  monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebooks' temporary files stay in here
  monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
      [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
  # Device counts come from the notebook itself (meshes_and_sharding sets 8 in its first
  # cell, as it must in a fresh kernel); the others run on one device.
  monkeypatch.delenv("JAX_NUM_CPU_DEVICES", raising=False)
  # No device count in XLA_FLAGS either, but the suite's compile settings (tests/conftest.py:
  # XLA's backend optimisation off, as for the `python -m vlx.main` runs), which the kernel
  # inherits: the notebooks are compile-bound too, and their programs then share the
  # persistent compilation cache's keys with the rest of the suite's.
  flags = suite_xla_flags()
  if flags:
    monkeypatch.setenv("XLA_FLAGS", flags)
  else:
    monkeypatch.delenv("XLA_FLAGS", raising=False)
  # Offline, no user checkpoint: the zero-shot notebook must build its random one.
  for var in ("VLX_CHECKPOINT", "VLX_WORKDIR", "VLX_DATA_DIR"):
    monkeypatch.delenv(var, raising=False)
  if name == "train_tiny_clip":
    monkeypatch.setenv("VLX_DATA_DIR", data_dir)


def _texts(nb):
  """All text a notebook printed (streams and text/plain results), cell by cell."""
  out = []
  for cell in nb.cells:
    if cell.cell_type != "code":
      continue
    parts = []
    for o in cell.get("outputs", []):
      if o.get("output_type") == "stream":
        parts.append(o.get("text", ""))
      elif "data" in o and "text/plain" in o["data"]:
        parts.append(o["data"]["text/plain"])
    out.append("".join(parts))
  return out


def _images(nb) -> int:
  return sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code"
             for o in c.get("outputs", []))


def _check_zero_shot(check, text, nb, tmp_path):
  del tmp_path
  assert check["random_weights"], "VLX_CHECKPOINT was unset: the notebook must use random weights"
  assert "RANDOM weights" in text
  probs = check["probs"]
  assert len(probs) == len(check["images"]) >= 3
  assert all(len(row) == len(check["classes"]) for row in probs)
  assert check["logit_bias"] is None  # a CLIP (softmax) checkpoint
  for image, row in zip(check["images"], probs):
    assert all(0.0 <= p <= 1.0 and math.isfinite(p) for p in row), (image, row)
    assert abs(sum(row) - 1.0) < 1e-5, f"{image}: probabilities sum to {sum(row)}"
  assert "row sums (softmax)" in text
  assert check["manual_matches"], "encode_image/encode_text by hand disagree with zero_shot"
  assert all(abs(n - 1.0) < 1e-4 for n in check["image_emb_norms"])
  assert "queries whose own photo ranked first" in text
  assert _images(nb) >= 3  # photos, probability bars, retrieval grid


def _check_train(check, text, nb, tmp_path):
  workdir = check["workdir"]
  assert os.path.realpath(workdir).startswith(os.path.realpath(tmp_path)), workdir
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  losses = {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}
  assert check["total_steps"] in losses, sorted(losses)
  assert len(losses) >= 2 and all(math.isfinite(v) and v > 0 for v in losses.values()), losses
  assert any("zeroshot/top1" in r for r in rows), "the zeroshot eval did not run"
  assert os.path.isdir(os.path.join(workdir, "checkpoints", str(check["total_steps"])))
  assert check["query_sims_shape"] == [5, check["gallery"]]
  assert "zero-shot top-1 on" in text
  assert _images(nb) >= 2  # loss curve, retrieval grid


def _check_mesh(check, text, nb, tmp_path):
  del nb, tmp_path
  assert check["device_count"] == 8
  assert check["matmul_match"], check["matmul_diff"]
  assert "sharded and single-device matmul results match: True" in text
  assert check["step_match"], check
  assert "sharded and single-device train step results match: True" in text
  assert check["param_diff"] < 1e-5 < check["moved"]
  per_device = check["per_device_bytes"]
  # Sharded parameters take less memory per device than replicated ones (data parallel).
  assert per_device["FSDP"] * 1.5 < per_device["data parallel"], per_device
  assert per_device["2x2x2"] * 2 < per_device["data parallel"], per_device
  assert "a bad mesh fails at once" in text


CHECKS = {"zero_shot_pretrained": _check_zero_shot, "train_tiny_clip": _check_train,
          "meshes_and_sharding": _check_mesh}


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name, tmp_path, monkeypatch, request, record_property):
  nbformat = pytest.importorskip("nbformat", reason="notebook tests need nbformat "
                                 "(pip install -e '.[test]')")
  nbclient = pytest.importorskip("nbclient", reason="notebook tests need nbclient "
                                 "(pip install -e '.[test]')")
  pytest.importorskip("ipykernel", reason="notebook tests need ipykernel "
                      "(pip install -e '.[test]')")
  # Only the training notebook reads the prepared synthetic data (shared by the session).
  data_dir = request.getfixturevalue("shapes_data_dir") if name == "train_tiny_clip" else None
  _kernel_env(monkeypatch, tmp_path, name, data_dir)
  nb = nbformat.read(str(COLABS / f"{name}.ipynb"), as_version=4)
  nb.cells.append(nbformat.v4.new_code_cell(CHECK_CELLS[name].strip()))
  run_dir = tmp_path / "run"
  run_dir.mkdir()
  client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                   resources={"metadata": {"path": str(run_dir)}})
  start = time.time()
  try:
    client.execute()
  finally:
    seconds = time.time() - start
    record_property("notebook_seconds", round(seconds, 1))
    # The executed copy, for a look at what went wrong.
    nbformat.write(nb, str(tmp_path / f"{name}.executed.ipynb"))
    print(f"{name}: executed in {seconds:.1f}s ({sys.executable})")
  texts = _texts(nb)
  lines = [l for l in texts[-1].splitlines() if l.startswith(CHECK_PREFIX)]
  assert len(lines) == 1, f"no {CHECK_PREFIX.strip()} line in the check cell's output: {texts[-1]!r}"
  CHECKS[name](json.loads(lines[0][len(CHECK_PREFIX):]), "\n".join(texts), nb, run_dir)
