"""Preprocessing ops named in config strings: `decode|value_range(-1,1)|sample_caption|tokenize(24)`.

Each registered op is a factory `(handle, *args) -> fn(example, rng) -> example`
(big_vision's string preprocessing, with an explicit numpy rng so every random
choice is reproducible from the pipeline seed and resumable).
"""

from __future__ import annotations

import ast
import functools
import io
import re
from typing import Callable, List

import numpy as np

from vlx import registry
from vlx.data.sources import DatasetHandle, get_path


class CorruptRecord(ValueError):
  """A record that cannot be decoded: the pipeline skips and counts it."""


def to_str(x) -> str:
  return x.decode("utf-8") if isinstance(x, bytes) else str(x)


def plain_text(value):
  """Record text (bytes, or object arrays of bytes: TFDS's) as str; other values as arrays.
  The annotation form of the video decode ops, whose evaluators compare strings."""
  if isinstance(value, (bytes, str)):
    return to_str(value)
  value = np.asarray(value)
  if value.dtype == object:
    return np.array([to_str(v) for v in value.ravel()], dtype=object).reshape(value.shape)
  return value


@registry.PP_OPS.register("decode")
def decode(handle: DatasetHandle):
  @decoding
  def fn(record, rng):
    del rng
    image = get_path(record, handle.image_key)
    if image is None:  # a source that could not read the image says why (vqa_v2: no file)
      raise CorruptRecord(str(record.get("image_error") or "record has no image"))
    if isinstance(image, (bytes, np.bytes_)):
      from PIL import Image  # pylint: disable=g-import-not-at-top
      image = np.asarray(Image.open(io.BytesIO(image)).convert("RGB"))
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
      raise CorruptRecord(f"image has shape {image.shape} dtype {image.dtype}")
    return record_fields(handle, record, {"image": image})
  return fn


def decoding(fn):
  """A decode op whose every failure is a CorruptRecord, which the pipeline skips and
  counts: a bad record costs one line in the log, never the run."""
  @functools.wraps(fn)
  def wrapped(record, rng):
    try:
      return fn(record, rng)
    except CorruptRecord:
      raise
    except Exception as e:  # pylint: disable=broad-except
      raise CorruptRecord(f"{type(e).__name__}: {e}") from e
  return wrapped


def record_fields(handle: DatasetHandle, record, out: dict, annotation=np.asarray) -> dict:
  """`out` (the decoded pixels) plus what every decode op passes on from the record: its
  non-empty `captions` (str; none is a CorruptRecord), `label` and the handle's annotation
  keys (each through `annotation`; absent ones, e.g. in images given to vlx.predict, are
  left out)."""
  captions = [to_str(c) for c in np.atleast_1d(get_path(record, handle.captions_key))]
  captions = [c for c in captions if c.strip()]
  if not captions:
    raise CorruptRecord("record has no captions")
  out["captions"] = captions
  if handle.label_key and handle.label_key in record:
    out["label"] = np.int32(record[handle.label_key])
  for key in handle.annotation_keys:
    try:
      out[key] = annotation(get_path(record, key))
    except (KeyError, IndexError, TypeError):
      pass
  return out


@registry.PP_OPS.register("resize")
def resize(handle, size: int):
  del handle

  def fn(ex, rng):
    del rng
    if ex["image"].shape[:2] != (size, size):
      from PIL import Image  # pylint: disable=g-import-not-at-top
      ex["image"] = np.asarray(Image.fromarray(ex["image"]).resize((size, size),
                                                                   Image.BILINEAR))
    return ex
  return fn


@registry.PP_OPS.register("resize_small")
def resize_small(handle, size: int, resample: str = "bilinear"):
  """The shorter side becomes `size`, the aspect ratio is kept (CLIP's and big_vision's
  evaluation resize; follow with `central_crop`)."""
  del handle
  from vlx.data import image_ops  # pylint: disable=g-import-not-at-top

  def fn(ex, rng):
    del rng
    ex["image"] = image_ops.resize_small(ex["image"], int(size), resample)
    return ex
  return fn


@registry.PP_OPS.register("central_crop")
def central_crop(handle, size: int):
  """The centred `size` x `size` window (after `resize_small(size)`: the image's middle)."""
  del handle
  from vlx.data import image_ops  # pylint: disable=g-import-not-at-top

  def fn(ex, rng):
    del rng
    try:
      ex["image"] = image_ops.center_crop(ex["image"], int(size))
    except ValueError as e:
      raise CorruptRecord(f"central_crop: {e}") from e
    return ex
  return fn


@registry.PP_OPS.register("random_resized_crop")
def random_resized_crop(handle, size: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                        resample: str = "bilinear"):
  """Training augmentation: an Inception-style random crop (area fraction in `scale`,
  aspect w/h in `ratio`) resized to `size` x `size`, drawn with the pipeline's rng (so a run is
  deterministic and resumes the same crops)."""
  del handle
  from vlx.data import image_ops  # pylint: disable=g-import-not-at-top
  scale, ratio = tuple(float(v) for v in scale), tuple(float(v) for v in ratio)
  if not (0 < scale[0] <= scale[1] <= 1 and 0 < ratio[0] <= ratio[1]):
    raise ValueError(f"random_resized_crop: need 0 < scale[0] <= scale[1] <= 1 and "
                     f"0 < ratio[0] <= ratio[1], got scale={scale} ratio={ratio}")

  def fn(ex, rng):
    ex["image"] = image_ops.random_resized_crop(ex["image"], int(size), rng, scale, ratio,
                                                resample)
    return ex
  return fn


@registry.PP_OPS.register("preprocess_image")
def preprocess_image(handle, resize: int, resize_mode: str = "shortest", crop=None,
                     mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), resample: str = "bicubic",
                     crop_rounding: str = "floor"):
  """Resize, crop and normalize exactly as an imported checkpoint expects (`vlx.pretrained`)."""
  del handle
  from vlx.data import image_ops  # pylint: disable=g-import-not-at-top

  def fn(ex, rng):
    del rng
    ex["image"] = image_ops.preprocess(ex["image"], resize, resize_mode, crop, mean, std,
                                       resample, crop_rounding)
    return ex
  return fn


@registry.PP_OPS.register("value_range")
def value_range(handle, lo: float = -1.0, hi: float = 1.0, key: str = "image"):
  """uint8 pixels of `ex[key]` (an image, or any array of them such as a video) -> [lo, hi]."""
  del handle

  def fn(ex, rng):
    del rng
    ex[key] = (ex[key].astype(np.float32) / 255.0) * (hi - lo) + lo
    return ex
  return fn


@registry.PP_OPS.register("sample_caption")
def sample_caption(handle):
  del handle

  def fn(ex, rng):
    ex["caption"] = ex["captions"][int(rng.integers(len(ex["captions"])))]
    return ex
  return fn


@registry.PP_OPS.register("salient_caption")
def salient_caption(handle, prob: float = 0.25):
  """With probability `prob`, replace the sampled caption by one naming only the salient
  object (the dataset says how: `DatasetHandle.salient_caption`). Training only."""
  if handle.salient_caption is None:
    raise ValueError("pp op salient_caption: this dataset has no salient captions")

  def fn(ex, rng):
    if rng.random() < prob:
      ex["caption"] = handle.salient_caption(ex["captions"])
    return ex
  return fn


@registry.PP_OPS.register("first_caption")
def first_caption(handle):
  del handle

  def fn(ex, rng):
    del rng
    ex["caption"] = ex["captions"][0]
    return ex
  return fn


@registry.PP_OPS.register("tokenize")
def tokenize(handle, max_len: int):
  def fn(ex, rng):
    del rng
    ex["text"] = handle.tokenizer.encode([ex["caption"]], max_len)[0]
    return ex
  return fn


@registry.PP_OPS.register("keep")
def keep(handle, *keys):
  del handle

  def fn(ex, rng):
    del rng
    return {k: ex[k] for k in keys if k in ex}
  return fn


_OP = re.compile(r"^\s*([A-Za-z_]\w*)\s*(?:\((.*)\))?\s*$")


def parse(pp: str, handle: DatasetHandle) -> Callable:
  """'op1(a,b)|op2' -> one function applying the ops in order."""
  fns: List[Callable] = []
  for part in pp.split("|"):
    if not part.strip():
      continue
    m = _OP.match(part)
    if not m:
      raise ValueError(f"cannot parse preprocessing op {part!r} in {pp!r}")
    name, args = m.group(1), m.group(2)
    try:
      args = ast.literal_eval(f"({args},)") if args and args.strip() else ()
    except (ValueError, SyntaxError) as e:
      raise ValueError(f"bad arguments in preprocessing op {part!r}: {e}") from e
    fns.append(registry.PP_OPS.get(name)(handle, *args))

  def apply(example, rng):
    for f in fns:
      example = f(example, rng)
    return example
  return apply
