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
from typing import Any, Callable, Iterable, List, Optional, Sequence, Tuple

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
      # A splits mapping that makes some on demand says which (`also`).
      raise KeyError(f"unknown split {name!r}; known: {sorted(self.splits)}"
                     f"{getattr(self.splits, 'also', '')}")
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


class DatasetNotBuiltError(ValueError):
  """A TFDS dataset that is not prepared in the data dir: the message names the build command."""


def source_texts(source, captions_key: str, limit: int = 20_000):
  """The captions of the first `limit` records of `source` (a tokenizer's training text)."""
  for i in range(min(len(source), limit)):
    for c in np.atleast_1d(get_path(source[i], captions_key)):
      yield c.decode() if isinstance(c, bytes) else str(c)


def tokenizer_file(vocab_size: int, text_fields: Sequence[str] = ()) -> str:
  """The cached model's name says what it was trained on: captions alone keep the historic
  name (the same tokenizer as before), any other field set gets its own file, so a tokenizer
  trained on other text is never silently reused."""
  extra = sorted(set(text_fields) - {"captions"})
  return f"spm_bpe_{vocab_size}" + "".join(f"+{f.replace('/', '_')}" for f in extra) + ".model"


def tokenizer_beside(directory: str, texts: Callable[[], Iterable[str]],
                     vocab_size: int, text_fields: Sequence[str] = ()) -> Tokenizer:
  """The sentencepiece model cached in `directory`, trained on `texts()` the first time."""
  path = os.path.join(directory, tokenizer_file(vocab_size, text_fields))
  if not os.path.exists(path):
    train_sentencepiece(texts(), path, vocab_size)
  return Tokenizer(path)


def _shapes_texts(source, fields: Sequence[str], limit: int = 20_000):
  """The synthetic scenes' text of every field a config's tasks use: `captions`, and the
  `questions` / `expressions` that `vlx.data.scene_qa` derives from each scene (every question
  type, drawn with a fixed rng, as the pp ops tokenize them)."""
  from vlx.data import scene_qa  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  for i in range(min(len(source), limit)):
    record = source[i]
    if "captions" in fields:
      for c in np.atleast_1d(record["captions"]):
        yield c.decode() if isinstance(c, bytes) else str(c)
    for field in fields:
      if field != "captions":
        yield from scene_qa.scene_texts(record, field, rng)


@registry.DATASETS.register("synthetic_shapes")
def synthetic_shapes(data_dir: Optional[str] = None, variant: str = "default",
                     vocab_size: int = 256, text_fields: Sequence[str] = ("captions",),
                     **unused) -> DatasetHandle:
  """`text_fields`: what the tokenizer is trained on (`captions`, `questions`,
  `expressions`); `load_dataset` derives them from the config's pp ops."""
  del unused
  from vlx.data import scene_qa  # pylint: disable=g-import-not-at-top
  unknown = set(text_fields) - {"captions", *scene_qa.TEXT_FIELDS}
  if unknown:
    raise ValueError(f"synthetic_shapes: unknown text fields {sorted(unknown)}; known: "
                     f"captions, {', '.join(scene_qa.TEXT_FIELDS)}")
  from vlx.data import shapes_render, synthetic_shapes as builder_lib  # pylint: disable=g-import-not-at-top
  data_dir = default_data_dir(data_dir)
  with _file_lock(os.path.join(data_dir, f".synthetic_shapes_{variant}.lock")):
    # Built under the lock: a builder made while another process generates sees no splits.
    builder = builder_lib.SyntheticShapes(config=variant, data_dir=data_dir,
                                          file_format="array_record")
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(verify_ssl=False))
    splits = {s: builder.as_data_source(split=s) for s in ("train", "test")}
    fields = tuple(sorted(set(text_fields) | {"captions"}))
    tokenizer = tokenizer_beside(builder.data_dir,
                                 lambda: _shapes_texts(splits["train"], fields), vocab_size,
                                 fields)
  return DatasetHandle(splits=splits, tokenizer=tokenizer,
                       class_names=shapes_render.class_names(),
                       templates=shapes_render.zeroshot_templates(),
                       salient_caption=shapes_render.salient_caption,
                       annotation_keys=("boxes", "object_colours", "object_shapes",
                                        "num_objects"))


def build_command(tfds_name: str, data_dir: str) -> str:
  return (f"tfds build {tfds_name} --data_dir={data_dir} --file_format=array_record "
          "(building needs TensorFlow: pip install -e .[tf])")


def _prepared_builder(tfds_name: str, data_dir: str):
  """The builder of a dataset prepared in `data_dir`, read from its own files
  (dataset_info.json, features.json): reading needs no TensorFlow, although constructing
  builders such as coco_captions' from their code imports it."""
  from tensorflow_datasets.core import read_only_builder  # pylint: disable=g-import-not-at-top
  try:
    builder = read_only_builder.builder_from_files(tfds_name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise DatasetNotBuiltError(
        f"dataset {tfds_name!r} is not built in {data_dir} (TFDS_DATA_DIR or "
        f"data.source.data_dir); build it once with: {build_command(tfds_name, data_dir)}"
    ) from e
  if builder.info.file_format is not None and builder.info.file_format.value != "array_record":
    raise DatasetNotBuiltError(
        f"dataset {tfds_name!r} in {builder.data_dir} is stored as "
        f"{builder.info.file_format.value}; vlx reads ArrayRecord: rebuild it with "
        f"{build_command(tfds_name, data_dir)}")
  return builder


@registry.DATASETS.register("tfds")
def tfds_dataset(tfds_name: str = "coco_captions", data_dir: Optional[str] = None,
                 splits: Sequence[str] = ("train", "val"), image_key: str = "image",
                 captions_key: str = "captions/text", label_key: Optional[str] = None,
                 tokenizer: Optional[str] = None, vocab_size: int = 8_000,
                 class_names: Optional[Sequence[str]] = None,
                 text_fields: Optional[Sequence[str]] = None, **unused) -> DatasetHandle:
  """Any TFDS dataset prepared as ArrayRecord (prepare it once with `tfds build`).

  `text_fields`: the record paths whose text trains the tokenizer (default: the captions).
  """
  del unused
  data_dir = default_data_dir(data_dir)
  builder = _prepared_builder(tfds_name, data_dir)
  missing = [s for s in splits if s not in builder.info.splits]
  if missing:
    raise ValueError(f"dataset {tfds_name!r} in {builder.data_dir} has no split(s) {missing}; "
                     f"it has {sorted(builder.info.splits)} (data.source.splits)")
  sources = {s: builder.as_data_source(split=s) for s in splits}
  fields = tuple(text_fields or (captions_key,))

  def texts():
    for field in fields:
      yield from source_texts(sources[splits[0]], field)
  tok = Tokenizer(tokenizer) if tokenizer else tokenizer_beside(
      builder.data_dir, texts, vocab_size, [] if fields == (captions_key,) else fields)
  return DatasetHandle(splits=sources, tokenizer=tok,
                       class_names=list(class_names) if class_names else None,
                       image_key=image_key, captions_key=captions_key, label_key=label_key)


def task_text_fields(data_config) -> Tuple[str, ...]:
  """The text the config's tasks read, from its pp ops (an op names its field with a
  `text_field` attribute, e.g. `scene_vqa` -> questions): the tokenizer is trained on it."""
  import re  # pylint: disable=g-import-not-at-top
  fields = {"captions"}
  for key in ("pp_train", "pp_eval"):
    for op in re.findall(r"(?:^|\|)\s*([A-Za-z_]\w*)", data_config.get(key) or ""):
      if op in registry.PP_OPS:
        field = getattr(registry.PP_OPS.get(op), "text_field", None)
        if field:  # one field name, or a tuple of them
          fields.update((field,) if isinstance(field, str) else field)
  return tuple(sorted(fields))


def load_dataset(data_config) -> DatasetHandle:
  """The dataset, with `data.tokenizer` (a spec, see `load_tokenizer`) replacing its own
  tokenizer: an imported checkpoint reads text only through the tokenizer it was trained with."""
  kwargs = dict(data_config.get("source", {}))
  if data_config.name == "synthetic_shapes" and "text_fields" not in kwargs:
    kwargs["text_fields"] = task_text_fields(data_config)
  handle = registry.DATASETS.get(data_config.name)(**kwargs)
  spec = data_config.get("tokenizer")
  if spec:
    handle.tokenizer = load_tokenizer(dict(spec))
  return handle
