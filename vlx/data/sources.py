"""Datasets by registry name -> random-access sources, tokenizer and class names.

`synthetic_shapes` (the embedded default) is generated on first use and cached;
any other TFDS dataset prepared in ArrayRecord (e.g. `coco_captions`) is read by
the same keys through `tfds`. Real task data: `vqa_v2` (the official JSON files and COCO
images, `vlx/data/vqa_v2.py`) and `ref_coco` (TFDS's RefCOCO/+/g, `vlx/data/ref_coco.py`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
from typing import Any, Callable, Iterable, List, Optional, Sequence

import numpy as np
import tensorflow_datasets as tfds

from vlx import registry
from vlx.data.tokenizer import Tokenizer, load_tokenizer, train_sentencepiece


@dataclasses.dataclass
class DatasetHandle:
  """What the pipeline and evaluators need from a dataset, whatever its origin."""
  splits: dict                   # split name -> random-access source of raw records
  tokenizer: Tokenizer
  class_names: Optional[List[str]] = None
  image_key: str = "image"
  captions_key: str = "captions"  # '/'-separated path into nested records
  label_key: Optional[str] = "label"
  # Zero-shot prompt templates suited to this dataset's captions ('{}' = class name).
  templates: Optional[Sequence[str]] = None
  # captions -> a caption naming only the image's salient object (for `salient_caption`).
  salient_caption: Optional[Callable[[List[str]], str]] = None
  # Record fields `decode` passes through for task ops (object boxes and classes: VQA,
  # grounding); the pipeline's final `keep` decides what reaches a batch.
  annotation_keys: Sequence[str] = ()
  # VQA datasets: answer index -> answer (the classes of `answer`/`answer_scores`).
  answer_vocab: Optional[Sequence[str]] = None

  def split(self, name: str) -> Sequence[Any]:
    if name not in self.splits:
      raise KeyError(f"unknown split {name!r}; known: {sorted(self.splits)}")
    return self.splits[name]


def get_path(record, path: str):
  for part in path.split("/"):
    record = record[part]
  return record


@contextlib.contextmanager
def _file_lock(path: str):
  """Only one process prepares a dataset; the others wait and then reuse it."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def default_data_dir(data_dir: Optional[str]) -> str:
  return os.path.expanduser(data_dir or os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets"))


def source_texts(source, captions_key: str, limit: int = 20_000):
  """The captions of the first `limit` records of `source` (a tokenizer's training text)."""
  for i in range(min(len(source), limit)):
    for c in np.atleast_1d(get_path(source[i], captions_key)):
      yield c.decode() if isinstance(c, bytes) else str(c)


def tokenizer_beside(directory: str, texts: Callable[[], Iterable[str]],
                     vocab_size: int) -> Tokenizer:
  """The sentencepiece model cached in `directory`, trained on `texts()` the first time."""
  path = os.path.join(directory, f"spm_bpe_{vocab_size}.model")
  if not os.path.exists(path):
    train_sentencepiece(texts(), path, vocab_size)
  return Tokenizer(path)


def _tokenizer_beside(builder, train_source, captions_key, vocab_size) -> Tokenizer:
  return tokenizer_beside(builder.data_dir, lambda: source_texts(train_source, captions_key),
                          vocab_size)


@registry.DATASETS.register("synthetic_shapes")
def synthetic_shapes(data_dir: Optional[str] = None, variant: str = "default",
                     vocab_size: int = 256, **unused) -> DatasetHandle:
  del unused
  from vlx.data import shapes_render, synthetic_shapes as builder_lib  # pylint: disable=g-import-not-at-top
  data_dir = default_data_dir(data_dir)
  with _file_lock(os.path.join(data_dir, f".synthetic_shapes_{variant}.lock")):
    # Built under the lock: a builder made while another process generates sees no splits.
    builder = builder_lib.SyntheticShapes(config=variant, data_dir=data_dir,
                                          file_format="array_record")
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(verify_ssl=False))
    splits = {s: builder.as_data_source(split=s) for s in ("train", "test")}
    tokenizer = _tokenizer_beside(builder, splits["train"], "captions", vocab_size)
  return DatasetHandle(splits=splits, tokenizer=tokenizer,
                       class_names=shapes_render.class_names(),
                       templates=shapes_render.zeroshot_templates(),
                       salient_caption=shapes_render.salient_caption,
                       annotation_keys=("boxes", "object_colours", "object_shapes",
                                        "num_objects"))


@registry.DATASETS.register("tfds")
def tfds_dataset(tfds_name: str = "coco_captions", data_dir: Optional[str] = None,
                 splits: Sequence[str] = ("train", "val"), image_key: str = "image",
                 captions_key: str = "captions/text", label_key: Optional[str] = None,
                 tokenizer: Optional[str] = None, vocab_size: int = 8_000,
                 class_names: Optional[Sequence[str]] = None, **unused) -> DatasetHandle:
  """Any TFDS dataset prepared as ArrayRecord (prepare it once with `tfds build`)."""
  del unused
  data_dir = default_data_dir(data_dir)
  builder = tfds.builder(tfds_name, data_dir=data_dir)
  sources = {s: builder.as_data_source(split=s) for s in splits}
  tok = Tokenizer(tokenizer) if tokenizer else _tokenizer_beside(
      builder, sources[splits[0]], captions_key, vocab_size)
  return DatasetHandle(splits=sources, tokenizer=tok,
                       class_names=list(class_names) if class_names else None,
                       image_key=image_key, captions_key=captions_key, label_key=label_key)


def load_dataset(data_config) -> DatasetHandle:
  """The dataset, with `data.tokenizer` (a spec, see `load_tokenizer`) replacing its own
  tokenizer: an imported checkpoint reads text only through the tokenizer it was trained with."""
  kwargs = dict(data_config.get("source", {}))
  handle = registry.DATASETS.get(data_config.name)(**kwargs)
  spec = data_config.get("tokenizer")
  if spec:
    handle.tokenizer = load_tokenizer(dict(spec))
  return handle
