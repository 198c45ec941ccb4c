"""`python -m vlx.main --config=configs/<family>.py:smoke` trains, evaluates and writes its outputs."""

import json
import math
import os

import pytest

from vlx_testlib import SHALLOW_CLIP, read_metrics, run_main, shapes_data_dir  # noqa: F401


@pytest.mark.parametrize("family", ["clip", "align", "siglip"])
def test_smoke_run_writes_all_outputs(shapes_data_dir, tmp_path, family):
  workdir = tmp_path / "w"
  # CLIP at the README's depth (tests/test_readme.py runs the same config, so its compiled
  # steps are shared); ALIGN and SigLIP with one layer a tower: the outputs, not the model,
  # are what this tests.
  shallow = () if family == "clip" else SHALLOW_CLIP
  proc = run_main(family, workdir, shapes_data_dir, *shallow)
  assert proc.returncode == 0
  assert "final metrics:" in proc.stdout

  rows = read_metrics(workdir)
  assert all(isinstance(r.get("step"), int) for r in rows), rows
  train = [r for r in rows if "train/loss" in r]
  # smoke: 6 steps, logged every 2.
  assert [r["step"] for r in train] == [2, 4, 6]
  assert all(math.isfinite(r["train/loss"]) for r in train)
  assert all(f"train/{family}/loss" in r for r in train)
  merged = {k: v for r in rows for k, v in r.items()}
  for key in ("zeroshot/top1", "retrieval/i2t_r1", "retrieval/t2i_r1", "linear_probe/1shot",
              "linear_probe/2shot", "data/skipped_records", "model/num_params"):
    assert key in merged, (key, sorted(merged))
  for key in ("zeroshot/top1", "retrieval/i2t_r1", "linear_probe/1shot"):
    assert 0.0 <= merged[key] <= 1.0, (key, merged[key])
  assert merged["data/skipped_records"] == 0
  eval_rows = [r for r in rows if "zeroshot/top1" in r]
  assert [r["step"] for r in eval_rows] == [6]

  events = [f for f in os.listdir(workdir / "tensorboard") if f.startswith("events.out.tfevents")]
  assert events and all(os.path.getsize(workdir / "tensorboard" / f) > 0 for f in events)

  with open(workdir / "config.json") as f:
    config = json.load(f)
  assert config["total_steps"] == 6 and list(config["objectives"]) == [family]
  assert config["data"]["source"]["data_dir"] == shapes_data_dir

  ckpts = sorted(int(n) for n in os.listdir(workdir / "checkpoints") if n.isdigit())
  assert ckpts == [3, 6], os.listdir(workdir / "checkpoints")


@pytest.mark.parametrize("family", ["albef", "oscar"])
def test_fusion_smoke_run_trains_and_evaluates_every_task(shapes_data_dir, tmp_path, family):
  """ALBEF (patches, EMA teacher) and OSCAR (regions, tags, MRM) through vlx.main on 2
  devices: every objective logs, the three fusion evaluators report in range."""
  workdir = tmp_path / "w"
  # One layer of each kind: the recipe's code paths at a fraction of its compile time.
  shallow = ("--config.model.image.depth=1", "--config.model.fusion.text_depth=1",
             "--config.model.fusion.fusion_depth=1")
  proc = run_main(family, workdir, shapes_data_dir, *shallow, variant="tiny,smoke",
                  num_devices=2)
  assert proc.returncode == 0, proc.stdout[-3000:]
  rows = read_metrics(workdir)
  train = [r for r in rows if "train/loss" in r]
  assert [r["step"] for r in train] == [2, 4]
  objectives = ("itc", "itm", "mlm", "vqa", "refer") + (("mrm",) if family == "oscar" else ())
  for name in objectives:
    assert all(math.isfinite(r[f"train/{name}/loss"]) for r in train), name
  merged = {k: v for r in rows for k, v in r.items()}
  for key in ("vqa/accuracy", "grounding/accuracy_iou50", "itm_retrieval/i2t_r1_itc",
              "itm_retrieval/i2t_r1_itm", "itm_retrieval/t2i_r1_itm"):
    assert 0.0 <= merged[key] <= 1.0, (key, merged.get(key))
  assert merged["vqa/num_questions"] == 32 and merged["grounding/num_expressions"] == 32


@pytest.mark.parametrize("override,needles", [
    # The pipeline keeps making 64 px images: refused up front, not a crash after compiling.
    ("--config.data.image_size=48", ("data.image_size=48", "pp_train", "(64, 64, 3)")),
    # tokenize(32) makes 32 ids whatever max_len says: the three lengths must agree.
    ("--config.data.pp_train=decode|value_range(-1,1)|sample_caption|tokenize(24)",
     ("data.max_len=32", "tokenize(24)")),
])
def test_overrides_the_data_does_not_follow_are_refused(shapes_data_dir, tmp_path, override,
                                                        needles):
  proc = run_main("clip", tmp_path / "w", shapes_data_dir, override, check=False, timeout=120)
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr
  errors = [line for line in proc.stderr.splitlines() if line.startswith("vlx:")]
  assert len(errors) == 1, proc.stderr[-3000:]
  for needle in needles:
    assert needle in errors[0], errors[0]
  assert not os.path.exists(tmp_path / "w" / "checkpoints")
