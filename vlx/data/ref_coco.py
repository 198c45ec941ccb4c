"""RefCOCO, RefCOCO+ and RefCOCOg through TFDS (`ref_coco`), for grounding.

Getting the data: TFDS's `ref_coco` is a manual download. Follow its instructions (`tfds
build ref_coco --manual_dir=M` prints them): the refer annotations from
https://github.com/lichengunc/refer and COCO's instances_train2014.json turned into
`M/refcoco.json` by TFDS's `datasets/ref_coco/manual_download_process.py` (needs refer.py
and pycocotools), the COCO train2014 images in `M/coco_train2014/`. Then prepare each
config once as ArrayRecord (building needs TensorFlow, the `tf` extra; reading does not):

  tfds build ref_coco --config=refcoco_unc --manual_dir=M --file_format=array_record \\
    --data_dir=$TFDS_DATA_DIR

or from Python: `tfds.builder("ref_coco/refcoco_unc", data_dir=D).download_and_prepare(
file_format="array_record", download_config=tfds.download.DownloadConfig(manual_dir=M))`.

Configs: refcoco_unc, refcoco_google, refcocoplus_unc (RefCOCO+; `refcoco+_unc` is accepted
here too), refcocog_umd, refcocog_google. Splits: train, validation, and testA/testB (unc),
test (refcocog_umd, refcoco_google).

Training and evaluating grounding on it (here with UNITER; the whole `data.source` dict is
replaced, so list every key; COCO category ids are 1..90, hence 91 region classes):

  python -m vlx.main --config=configs/uniter.py:tiny --workdir=workdirs/uniter_refcoco \\
    --config.data.name=ref_coco \\
    --config.data.source="{'config': 'refcoco_unc', 'data_dir': '', 'vocab_size': 8000}" \\
    --config.data.train_split=train --config.data.test_split=validation \\
    --config.data.pp_train="decode|resize(64)|value_range(-1,1)|sample_caption|tokenize(28)|refcoco_refer(12, 16, 0.1)" \\
    --config.data.pp_eval="decode|resize(64)|value_range(-1,1)|first_caption|tokenize(28)|refcoco_refer(12, 16)" \\
    --config.data.keys="('image','text','boxes','box_mask','box_labels','target','expression')" \\
    --config.model.num_region_classes=91 \\
    --config.model.tasks="('itc','itm','mlm','refer','mrm')" \\
    --config.objectives="{'itc': {'weight': 1.0}, 'itm': {'weight': 1.0}, 'mlm': {'weight': 1.0}, 'refer': {'weight': 1.0}, 'mrm': {'weight': 1.0}}" \\
    --config.evals="{'grounding': {'type': 'grounding', 'split': 'validation', 'limit': 1024}}"

(`data_dir` '' = $TFDS_DATA_DIR or ~/tensorflow_datasets. The caption of a record is one of
its image's referring expressions. The evaluator names its split itself. The first load trains
the tokenizer on the expressions of up to 20,000 train images, reading them whole: minutes,
once; it is cached in the prepared dataset's folder. Checked: this command trains and
evaluates (2 steps) on a small ref_coco prepared as in tests/test_real_data_readers.py.)

A TFDS example is one image with every referred object and its expressions. The records
here keep that (one per image) and add flat fields: `captions` (all the image's expressions),
`object_boxes` [n, 4] and `object_labels` [n] (every COCO object of the image: the candidate
boxes), `refexps` [k], and per expression `refexp_targets` [k] (the referred object's index
among `object_boxes`, TFDS's `gt_box_index`) and `refexp_boxes` [k, 4] (that object's own
annotated box). Boxes are TFDS `BBoxFeature`s: (ymin, xmin, ymax, xmax) normalized to
[0, 1], the layout vlx's grounding keys use. `refcoco_refer` draws one expression per visit
(training sees every expression over the epochs; an evaluation reads one seeded expression per
image, not every expression as the published protocol does).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Optional

import numpy as np
import tensorflow_datasets as tfds

from vlx import registry
from vlx.data import sources
from vlx.data.pp_ops import CorruptRecord
from vlx.data.tokenizer import Tokenizer

CONFIGS = ("refcoco_unc", "refcoco_google", "refcocoplus_unc", "refcocog_umd",
           "refcocog_google")
_ALIASES = {"refcoco+_unc": "refcocoplus_unc"}


def _str(x) -> str:
  return x.decode("utf-8") if isinstance(x, bytes) else str(x)


class RefCocoRecords(Sequence):
  """A TFDS `ref_coco` split with the flat fields of the module doc added to each example."""

  def __init__(self, source):
    self.source = source

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, i):
    if isinstance(i, slice):
      return [self[j] for j in range(*i.indices(len(self)))]
    i = int(i) + (len(self) if int(i) < 0 else 0)
    if not 0 <= i < len(self):
      raise IndexError(f"record {i} of {len(self)}")
    ex = self.source[i]
    anns, objects = ex["coco_annotations"], ex["objects"]
    exprs, targets, boxes = [], [], []
    for raws, gt, box in zip(objects["refexp"]["raw"], objects["gt_box_index"],
                             objects["bbox"]):
      for raw in np.atleast_1d(raws):
        exprs.append(_str(raw))
        targets.append(int(gt))
        boxes.append(np.asarray(box, np.float32))
    return {"image": ex["image"], "image_id": ex["image/id"], "captions": exprs,
            "object_boxes": np.asarray(anns["bbox"], np.float32).reshape(-1, 4),
            "object_labels": np.asarray(anns["label"], np.int64).reshape(-1),
            "refexps": np.asarray(exprs, dtype=object),
            "refexp_targets": np.asarray(targets, np.int32),
            "refexp_boxes": np.asarray(boxes, np.float32).reshape(-1, 4)}


@registry.DATASETS.register("ref_coco")
def ref_coco_dataset(config: str = "refcoco_unc", data_dir: Optional[str] = None,
                     vocab_size: int = 8_000, tokenizer: Optional[str] = None,
                     **unused) -> sources.DatasetHandle:
  """A prepared TFDS `ref_coco/<config>` read with `tfds.data_source` (see the module doc)."""
  del unused
  config = _ALIASES.get(config, config)
  if config not in CONFIGS:
    raise ValueError(f"ref_coco: unknown config {config!r}; known: {CONFIGS}")
  data_dir = sources.default_data_dir(data_dir)
  name = f"ref_coco/{config}"
  if not tfds.builder(name, data_dir=data_dir).is_prepared():
    raise FileNotFoundError(
        f"{name} is not prepared in {data_dir}: it is a manual download, see "
        "vlx/data/ref_coco.py for the files and the `tfds build` command")
  raw = tfds.data_source(name, data_dir=data_dir, download=False)
  splits = {str(s): RefCocoRecords(src) for s, src in raw.items()}
  if "train" not in splits:
    raise ValueError(f"{name}: no train split among {sorted(splits)}")
  if tokenizer:
    tok = Tokenizer(tokenizer)
  else:
    cache = raw["train"].dataset_info.data_dir
    with sources._file_lock(os.path.join(data_dir, f".ref_coco_{config}.lock")):  # pylint: disable=protected-access
      tok = sources.tokenizer_beside(
          cache, lambda: sources.source_texts(splits["train"], "captions"), vocab_size)
  return sources.DatasetHandle(
      splits=splits, tokenizer=tok, image_key="image", captions_key="captions", label_key=None,
      annotation_keys=("image_id", "object_boxes", "object_labels", "refexps",
                       "refexp_targets", "refexp_boxes"))


@registry.PP_OPS.register("refcoco_refer")
def refcoco_refer_op(handle, max_len: int, max_boxes: int, jitter: float = 0.0):
  """One referring expression of the image, drawn with the pipeline's rng: `expression`
  (token ids [max_len]), `expression_string`, the candidate `boxes` [max_boxes, 4] (the
  image's COCO objects, (y0, x0, y1, x1) in [0, 1]; zero rows past `box_mask`), `box_mask`,
  `box_labels` (COCO category ids, -1 past the mask), `target` (the referred object's index
  among `boxes`) and `target_box` (its annotated box).

  An image with more than `max_boxes` objects keeps the referred one and the largest others
  (in annotation order). `jitter` moves each candidate box edge by up to that fraction of
  the box size (training); `target_box` stays the annotated box."""
  if max_boxes < 1:
    raise ValueError(f"refcoco_refer: max_boxes must be at least 1, got {max_boxes}")
  if not 0.0 <= jitter < 0.5:
    raise ValueError(f"refcoco_refer: jitter must lie in [0, 0.5) (boxes would invert), "
                     f"got {jitter}")

  def fn(ex, rng):
    exprs = [_str(e) for e in np.asarray(ex["refexps"], dtype=object).reshape(-1)]
    objects = np.asarray(ex["object_boxes"], np.float32).reshape(-1, 4)
    if not exprs or not len(objects):
      raise CorruptRecord("ref_coco record without expressions or objects")
    k = int(rng.integers(len(exprs)))
    target = int(np.asarray(ex["refexp_targets"]).reshape(-1)[k])
    if not 0 <= target < len(objects):
      raise CorruptRecord(f"ref_coco: target {target} outside the {len(objects)} objects")
    keep = np.arange(len(objects))
    if len(objects) > max_boxes:
      area = np.prod(np.clip(objects[:, 2:] - objects[:, :2], 0, None), axis=1)
      area[target] = np.inf
      keep = np.sort(np.argsort(-area, kind="stable")[:max_boxes])
    n = len(keep)
    boxes = np.zeros((max_boxes, 4), np.float32)
    boxes[:n] = objects[keep]
    if jitter:
      size = np.concatenate([boxes[:n, 2:] - boxes[:n, :2]] * 2, axis=1)
      boxes[:n] = np.clip(boxes[:n] + rng.uniform(-jitter, jitter, (n, 4)) * size, 0, 1)
    mask = np.arange(max_boxes) < n
    labels = np.full(max_boxes, -1, np.int32)
    labels[:n] = np.asarray(ex["object_labels"]).reshape(-1)[keep]
    expr = exprs[k]
    ex.update(expression=handle.tokenizer.encode([expr], max_len)[0], expression_string=expr,
              boxes=boxes, box_mask=mask, box_labels=labels,
              target=np.int32(int(np.flatnonzero(keep == target)[0])),
              target_box=np.asarray(ex["refexp_boxes"], np.float32).reshape(-1, 4)[k])
    return ex

  return fn
