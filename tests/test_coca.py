"""CoCa end to end: the main job on its smoke argument writes captioning metrics and a
gallery; `python -m vlx.predict` captions a folder of images and the test split from
the checkpoint; the COCO caption scorers rank a right caption above a wrong one."""

import json
import subprocess

import numpy as np
import pytest

from vlx.evals.captioning import coco_caption_scores, simple_tokenize
from vlx_testlib import (PYTHON, REPO, read_metrics, run_main, shapes_data_dir,  # noqa: F401
                         subprocess_env)


# One layer of each kind (the smoke config has 4 image, 3 unimodal and 2 multimodal text
# layers): the same modules, losses, evaluators and decoders (each stack is one Block unrolled
# in a loop) for a fraction of the train step's and the decoders' compile time.
SHALLOW = {"model.image.depth": 1, "model.text.unimodal_depth": 1,
           "model.text.multimodal_depth": 1}


def test_coca_smoke_run_then_predict(shapes_data_dir, tmp_path):
  workdir = tmp_path / "w"
  # A model vocabulary below the tokenizer's (256): the run widens it before writing config.json.
  run_main("coca", workdir, shapes_data_dir, "--config.model.text.vocab_size=200",
           *(f"--config.{k}={v}" for k, v in SHALLOW.items()))
  merged = {k: v for r in read_metrics(workdir) for k, v in r.items()}
  for key in ("train/clip/loss", "train/captioning/loss", "train/captioning/token_acc",
              "captioning/cider", "captioning/bleu4", "captioning/rouge_l",
              "captioning/greedy_cider", "zeroshot/top1", "retrieval/i2t_r1"):
    assert key in merged, (key, sorted(merged))
  assert np.isfinite(merged["captioning/cider"])
  html = (workdir / "captions.html").read_text()
  assert html.count("<img") == 16 and "greedy" in html
  rows = [json.loads(line) for line in (workdir / "captions.jsonl").read_text().splitlines()]
  assert len(rows) == 32 and all(len(r["references"]) == 5 for r in rows)

  _config_json_is_the_config_that_ran(workdir, shapes_data_dir)

  from PIL import Image  # pylint: disable=g-import-not-at-top
  folder = tmp_path / "imgs"
  folder.mkdir()
  for i, shape in enumerate(((64, 64), (100, 60))):  # the model's size; one to resize and crop
    pixels = np.random.default_rng(i).integers(0, 255, shape + (3,), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / f"img{i}.png")
  (folder / "notes.txt").write_text("not an image")
  (folder / "img2_broken.jpg").write_bytes(b"not a jpeg")  # skipped, named, counted
  out = tmp_path / "pred.jsonl"
  proc = subprocess.run(
      [PYTHON, "-m", "vlx.predict", f"--workdir={workdir}", f"--images={folder}",
       "--method=beam", "--beam_size=2", "--max_len=12", f"--out={out}"],
      cwd=REPO, env=subprocess_env(1), capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  preds = [json.loads(line) for line in out.read_text().splitlines()]
  assert [p["image"] for p in preds] == ["img0.png", "img1.png"]
  assert proc.stdout.splitlines()[0].startswith("img0.png\t")
  assert "skipped 1 unreadable image file(s): img2_broken.jpg" in proc.stderr, proc.stderr
  assert "central_crop(64)" in proc.stderr

  proc = subprocess.run(
      [PYTHON, "-m", "vlx.predict", f"--workdir={workdir}", "--split=test", "--limit=3",
       "--method=sample", "--top_k=5"], cwd=REPO, env=subprocess_env(1), capture_output=True,
      text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  preds = [json.loads(line) for line in (workdir / "predictions.jsonl").read_text().splitlines()]
  assert len(preds) == 3 and all(len(p["references"]) == 5 for p in preds)

  proc = subprocess.run([PYTHON, "-m", "vlx.predict", f"--workdir={workdir}", "--beam=3"],
                        cwd=REPO, env=subprocess_env(1), capture_output=True, text=True)
  assert proc.returncode == 2 and "unknown flag --beam" in proc.stderr


def _config_json_is_the_config_that_ran(workdir, data_dir):
  """config.json equals the config as the run used it (vocabulary fitted to the dataset), and
  the model is built from it, and its checkpoint restored, without reading the dataset."""
  from vlx import build, config_lib, predict  # pylint: disable=g-import-not-at-top
  from vlx.data import sources  # pylint: disable=g-import-not-at-top
  from vlx.train import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  ran = config_lib.load_config_file(f"{REPO}/configs/coca.py:smoke")
  with ran.unlocked():
    ran.data.source.data_dir = data_dir
    ran.model.text.vocab_size = 200
  config_lib.apply_overrides(ran, [(k, str(v)) for k, v in SHALLOW.items()])
  build.fit_vocab(ran, sources.load_dataset(ran.data))
  saved = json.loads((workdir / "config.json").read_text())
  assert saved == workdir_lib.config_as_json(ran)
  assert saved["model"]["text"]["vocab_size"] == 256  # fitted to the tokenizer

  def no_dataset(*args, **kwargs):
    raise AssertionError("load_model read the dataset")
  original = sources.load_dataset
  sources.load_dataset = no_dataset
  try:
    config, _, _, params = predict.load_model(str(workdir))
  finally:
    sources.load_dataset = original
  assert config.to_dict() == saved and params  # restored with the fitted vocabulary's shapes


@pytest.mark.parametrize("java", [True, False])
def test_caption_scores_rank_right_above_wrong(monkeypatch, java):
  if not java:  # the pure-Python tokenizer path used where Java is missing
    monkeypatch.setattr("vlx.evals.captioning.shutil.which", lambda _: None)
  elif not __import__("shutil").which("java"):
    pytest.skip("no Java here")
  refs = [["a large red circle in the top left", "there is a large red circle in the top left"],
          ["two shapes: a large blue square, a small green cross",
           "a large blue square in the center with a small green cross to the left"]]
  right = coco_caption_scores(refs, [refs[0][0], refs[1][1]], meteor=False, spice=False)
  wrong = coco_caption_scores(refs, ["a small green triangle", "a picture of a white star"],
                              meteor=False, spice=False)
  assert set(right) == {"bleu1", "bleu2", "bleu3", "bleu4", "rouge_l", "cider"}
  assert right["bleu4"] > 0.9 and right["cider"] > 1.0
  for k in right:
    assert right[k] > wrong[k], (k, right[k], wrong[k])


def test_simple_tokenize_drops_punctuation():
  assert simple_tokenize("Two shapes: a Large red circle, a cross.") == \
      "two shapes a large red circle a cross"
