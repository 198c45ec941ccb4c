"""Every accelerator config, end to end on data in coco_captions' real TFDS format.

The dataset is written by TFDS's own coco_captions builder class (its real features: JPEG
`image` of several aspect ratios, `image/filename`, `image/id`, `objects`, `captions` with
`text` and `id`; version 1.1.0, config 2014, splits train and val, ArrayRecord), only its
download and generation replaced by a few made-up images. No TensorFlow: the builder's
features encode JPEG bytes as they are and decode them with PIL; the one TensorFlow use in
its `_info` (`tf.int64`) is replaced by numpy's int64, which TFDS treats alike.
Then `python -m vlx.main` (in-process) runs one accelerator variant of every dual-encoder
and CoCa config at `,smoke` on it: train steps, a checkpoint, every configured evaluator on
the configured test split ('val': coco_captions' Karpathy val). At `,smoke` a config's sizes
differ only in the patch size (a test below holds them to that), so one run per config, with
the sizes spread so that each size and each patch size runs once, covers the data path, step,
checkpoint and evaluators of all of them; each size's shapes are built in
tests/test_param_axes.py and tests/test_config.py.
"""

import io
import json
import os
import types

import numpy as np
import pytest
import tensorflow_datasets as tfds

from vlx_testlib import PYTHON, REPO, checkpoint_steps, read_metrics, subprocess_env

# (height, width): landscape, portrait, wide, square, tall, as COCO's photos come.
ASPECTS = ((120, 160), (160, 120), (90, 160), (128, 128), (160, 80))
COLOURS = ("red", "green", "blue", "yellow", "white")
THINGS = ("dog", "cat", "bus", "pizza", "kite", "train")


def _jpeg(h, w, i):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(i)
  img = np.full((h, w, 3), rng.integers(0, 256, 3), np.uint8)
  y0, x0 = h // 4, w // 4
  img[y0:y0 + h // 2, x0:x0 + w // 2] = rng.integers(0, 256, 3)
  buf = io.BytesIO()
  Image.fromarray(img).save(buf, format="JPEG", quality=85)
  return buf.getvalue()


def _example(i):
  h, w = ASPECTS[i % len(ASPECTS)]
  colour, thing = COLOURS[i % len(COLOURS)], THINGS[(i // len(COLOURS)) % len(THINGS)]
  n = 5 + i % 3  # COCO has 5 to 7 captions per image
  captions = [{"id": 10 * i + j, "text": f"A {colour} {thing} seen from view {j}."}
              for j in range(n)]
  return f"COCO_{i:012d}.jpg", {
      "image": _jpeg(h, w, i), "image/filename": f"COCO_{i:012d}.jpg", "image/id": i,
      "objects": {"id": [i], "area": [h * w // 4], "label": [i % 80], "is_crowd": [False],
                  "bbox": [tfds.features.BBox(0.25, 0.25, 0.75, 0.75)]},
      "captions": captions}


def build_coco_captions(data_dir: str, num_train: int = 48, num_val: int = 24) -> str:
  """coco_captions/2014/1.1.0 in `data_dir`, written by TFDS's own builder (see the module
  docstring); returns the dataset's directory."""
  from tensorflow_datasets.object_detection import coco, coco_captions  # pylint: disable=g-import-not-at-top

  class TinyCocoCaptions(coco_captions.CocoCaptions, skip_registration=True):
    name = "coco_captions"  # the real name, config (2014) and version (1.1.0)

    def _split_generators(self, dl_manager):
      del dl_manager
      return {"train": self._generate_examples(range(num_train)),
              "val": self._generate_examples(range(1000, 1000 + num_val))}

    def _generate_examples(self, ids):  # pylint: disable=arguments-differ
      for i in ids:
        yield _example(i)

  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(coco, "tf", types.SimpleNamespace(int64=np.int64), raising=False)
    builder = TinyCocoCaptions(data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare()
  return str(builder.data_dir)


@pytest.fixture(scope="module")
def coco_dir(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("coco_tfds"))
  build_coco_captions(data_dir)
  return data_dir


def test_the_dataset_is_coco_captions_real_format(coco_dir):
  from tensorflow_datasets.core import read_only_builder  # pylint: disable=g-import-not-at-top
  from vlx.data import sources  # pylint: disable=g-import-not-at-top
  builder = read_only_builder.builder_from_files("coco_captions", data_dir=coco_dir)
  assert (builder.name, builder.builder_config.name, str(builder.version)) == (
      "coco_captions", "2014", "1.1.0")
  assert builder.info.file_format.value == "array_record"
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {"train": 48, "val": 24}
  features = builder.info.features
  assert type(features["image"]).__name__ == "Image"
  assert features["image"].encoding_format == "jpeg"
  assert set(features) == {"image", "image/filename", "image/id", "objects", "captions"}
  assert set(features["captions"].feature) == {"text", "id"}
  assert set(features["objects"].feature) == {"id", "area", "bbox", "label", "is_crowd"}
  files = os.listdir(builder.data_dir)
  assert "coco_captions-val.array_record-00000-of-00001" in files, files
  with open(os.path.join(builder.data_dir, "dataset_info.json")) as f:
    assert json.load(f)["name"] == "coco_captions"
  # Decoded (PIL) at their own aspect ratios, captions as coco_captions gives them.
  val = builder.as_data_source(split="val")
  records = [val[i] for i in range(len(val))]
  assert {r["image"].shape for r in records} == {(h, w, 3) for h, w in ASPECTS}
  assert all(r["image"].dtype == np.uint8 for r in records)
  first = {r["image/id"]: r for r in records}[1000]
  assert [t.decode() for t in first["captions"]["text"]] == [
      c["text"] for c in _example(1000)[1]["captions"]]
  # vlx's source reads it by name, without TensorFlow.
  handle = sources.tfds_dataset("coco_captions", data_dir=coco_dir, vocab_size=128)
  assert len(handle.split("val")) == 24 and handle.captions_key == "captions/text"


FAMILIES = ("clip", "siglip", "align", "coca", "captioner")
SIZES = ("s32", "b32", "b16", "l14")
# (config, size) run end to end: every config once, every size (so every patch size) once.
# The finest patch (l14: the most image tokens) goes to a dual encoder, the coarsest to CoCa,
# the costliest model (CoCa l14 took 114 s of the 20 variants' 8-114 s).
END_TO_END = (("clip", "l14"), ("siglip", "b32"), ("align", "b16"), ("coca", "s32"),
              ("captioner", "b16"))


def _flat(tree, prefix=""):
  out = {}
  for k, v in tree.items():
    out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
  return out


@pytest.mark.parametrize("family", FAMILIES)
def test_smoke_sizes_differ_only_in_patch_size(family):
  """What lets one end-to-end run per config stand for its four sizes: at `,smoke` they are
  the same run but for the ViT's patch size. A difference elsewhere fails here: then run
  that size end to end too (END_TO_END)."""
  from vlx.config_lib import load_config_file  # pylint: disable=g-import-not-at-top
  configs = {size: _flat(load_config_file(os.path.join(str(REPO), f"configs/{family}.py:"
                                                        f"{size},smoke")).to_dict())
             for size in SIZES}
  first = configs[SIZES[0]]
  for size in SIZES[1:]:
    differ = {k for k in set(first) | set(configs[size]) if first.get(k) != configs[size].get(k)}
    assert differ <= {"model.image.patch_size"}, (family, size, sorted(differ))
  assert {f for f, _ in END_TO_END} == set(FAMILIES)
  assert {s for _, s in END_TO_END} == set(SIZES)  # so every patch size runs once, too


# Set to run all 20 (config, size) pairs end to end, not only END_TO_END (~15 min on 2 cores).
ALL_VARIANTS_ENV = "VLX_ALL_ACCELERATOR_VARIANTS"


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("size", SIZES)
def test_accelerator_variant_runs_end_to_end_on_coco_captions(coco_dir, tmp_path, family, size):
  """Every accelerator variant of every dual-encoder and CoCa config at `,smoke`. CI runs the
  END_TO_END five (every config and every patch size once); the other fifteen differ from one
  of them only in the patch size (test_smoke_sizes_differ_only_in_patch_size), and run when
  VLX_ALL_ACCELERATOR_VARIANTS=1."""
  if (family, size) not in END_TO_END and os.environ.get(ALL_VARIANTS_ENV) != "1":
    pytest.skip(f"{family}.py:{size},smoke equals a CI-run variant but for its patch size; "
                f"{ALL_VARIANTS_ENV}=1 runs it")
  from vlx import main as vlx_main  # pylint: disable=g-import-not-at-top
  from vlx.config_lib import load_config_file  # pylint: disable=g-import-not-at-top
  variant = f"configs/{family}.py:{size},smoke"
  config = load_config_file(os.path.join(str(REPO), variant))
  assert config.data.source.tfds_name == "coco_captions" and config.data.test_split == "val"
  workdir = str(tmp_path / "run")
  # Greedy captions of 16 tokens, not the variant's 77: the same decoder and decode loop, and
  # the training step still runs every text position; an untrained captioner never stops
  # early, so its decoding time grows with the length.
  short = (["--config.evals.captioning.max_len=16"] if "captioning" in config.evals else [])
  rc = vlx_main.main([f"--config={os.path.join(str(REPO), variant)}", f"--workdir={workdir}",
                      f"--config.data.source.data_dir={coco_dir}", *short])
  assert rc == 0, variant
  rows = read_metrics(workdir)
  train_steps = [r["step"] for r in rows if "train/loss" in r]
  assert train_steps and max(train_steps) == config.total_steps
  assert all(np.isfinite(r["train/loss"]) for r in rows if "train/loss" in r)
  assert checkpoint_steps(workdir), "no checkpoint written"
  assert config.evals, variant
  evaluated = {k.split("/")[0] for r in rows for k in r if r["step"] == config.total_steps}
  for name in config.evals:
    assert name in evaluated, (variant, name, sorted(evaluated))
  if "retrieval" in config.evals:
    row = next(r for r in rows if "retrieval/num_images" in r)
    assert row["retrieval/num_images"] == 24  # every image of the val split
  if "captioning" in config.evals:
    assert any("captioning/cider" in r for r in rows)


def test_a_dataset_that_is_not_built_names_the_build_command(tmp_path):
  """Without coco_captions in the data dir: exit 2, one line naming the dataset, the data dir
  and `tfds build`, no traceback."""
  import subprocess  # pylint: disable=g-import-not-at-top
  empty = tmp_path / "empty_tfds"
  empty.mkdir()
  proc = subprocess.run(
      [PYTHON, "-m", "vlx.main", "--config=configs/clip.py:b16", f"--workdir={tmp_path / 'w'}"],
      cwd=REPO, env=subprocess_env(TFDS_DATA_DIR=str(empty)), capture_output=True, text=True,
      timeout=300)
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  lines = [line for line in proc.stderr.splitlines() if line.startswith("vlx:")]
  assert len(lines) == 1, proc.stderr[-3000:]
  line = lines[0]
  for needle in ("'coco_captions'", str(empty), f"tfds build coco_captions --data_dir={empty}",
                 "pip install -e .[tf]"):
    assert needle in line, (needle, line)
