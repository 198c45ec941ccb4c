"""Checks a whole config before anything runs: values in range, and keys that must agree.

Overrides are typed one key at a time (config_lib); what only the whole config can tell —
a step count of 0, a mesh axis of 0, an image size the preprocessing does not produce, a
text length three keys disagree on — is checked here, up front, so a bad run fails in one
line naming the keys and their values instead of compiling and crashing minutes later.
`check` also turns the usual dtype spellings (bf16, fp32, ...) into the models' names.
"""

from __future__ import annotations

import math
import re
from typing import Dict, Sequence

import ml_collections

from vlx.config_lib import ConfigError

# Every name people write for the dtypes the models take (vlx.models.layers.DTYPES).
DTYPE_ALIASES = {
    "float32": "float32", "fp32": "float32", "f32": "float32",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float16": "float16", "fp16": "float16", "f16": "float16", "half": "float16",
}
# Top-level counts: each must be an int >= 1 (0 divides by zero or never happens).
POSITIVE_INTS = ("total_steps", "batch_size", "accum_steps", "log_every", "eval_every",
                 "checkpoint_every", "keep_checkpoints", "eval_batch_size")
MESH_AXES = ("data", "fsdp", "tensor")


def check(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Raises ConfigError on the first problem; returns `config` with dtype names normalized."""
  _check_counts(config)
  _check_mesh(config.get("mesh"))
  _normalize_dtypes(config.get("model"), "model")
  _check_optimizer(config.get("optimizer"))
  _check_lengths(config)
  _check_image_grid(config)
  return config


def _fail(message: str):
  raise ConfigError(message)


def parse_init_map(spec: str) -> Dict[str, str]:
  """`"dst=src,..."` (config.init_map) -> {dst: src}; one clear line for a malformed entry."""
  out = {}
  for item in (s.strip() for s in (spec or "").split(",")):
    if not item:
      continue
    dst, eq, src = (x.strip() for x in item.partition("="))
    if not eq or not dst or not src:
      _fail(f"init_map entry {item!r}: expected dst=src (e.g. video_tower=video)")
    out[dst] = src
  return out


def _check_counts(config):
  for key in POSITIVE_INTS:
    if key in config and not (isinstance(config[key], int) and config[key] >= 1):
      _fail(f"{key}={config[key]!r}: must be an integer >= 1")
  if "accum_steps" in config and config.batch_size % config.accum_steps:
    _fail(f"batch_size={config.batch_size} is not divisible by accum_steps={config.accum_steps}")
  data = config.get("data") or {}
  if "num_threads" in data and data.num_threads < 1:
    _fail(f"data.num_threads={data.num_threads}: must be >= 1")
  parse_init_map(config.get("init_map", ""))
  if "shuffle_block" in data and not (isinstance(data.shuffle_block, int)
                                      and data.shuffle_block >= 1):
    _fail(f"data.shuffle_block={data.shuffle_block!r}: must be an integer >= 1")
  if "prefetch" in data and data.prefetch < 0:
    _fail(f"data.prefetch={data.prefetch}: must be >= 0")
  for name, ev in (config.get("evals") or {}).items():
    for key in ("limit", "gallery", "beam_size"):
      value = ev.get(key) if hasattr(ev, "get") else None
      if value is not None and not (isinstance(value, int) and value >= 1):
        _fail(f"evals.{name}.{key}={value!r}: must be an integer >= 1 (or None for no limit)"
              if key == "limit" else f"evals.{name}.{key}={value!r}: must be an integer >= 1")


def _check_mesh(mesh):
  if mesh is None:
    return
  for axis in MESH_AXES:
    size = mesh.get(axis, 1)
    if not isinstance(size, int) or (size < 1 and size != -1):
      _fail(f"mesh.{axis}={size!r}: must be a device count >= 1, or -1 for all the rest")
  if sum(mesh.get(a, 1) == -1 for a in MESH_AXES) > 1:
    _fail("at most one of mesh.data, mesh.fsdp, mesh.tensor may be -1 (got "
          + ", ".join(f"{a}={mesh.get(a, 1)}" for a in MESH_AXES) + ")")


def _normalize_dtypes(node, path: str):
  """Every `dtype` / `*_dtype` key under `model`: an alias becomes the canonical name."""
  if node is None:
    return
  for key in list(node.keys()):
    value, here = node[key], f"{path}.{key}"
    if isinstance(value, (ml_collections.ConfigDict, dict)):
      _normalize_dtypes(value, here)
    elif (key == "dtype" or key.endswith("_dtype")) and isinstance(value, str):
      name = DTYPE_ALIASES.get(value.lower())
      if name is None:
        _fail(f"{here}={value!r}: unknown dtype; valid: {', '.join(DTYPE_ALIASES)}")
      if name != value:
        with _unlocked(node):
          node[key] = name


def _unlocked(node):
  return node.unlocked() if isinstance(node, ml_collections.ConfigDict) else _Null()


class _Null:
  def __enter__(self):
    return self

  def __exit__(self, *unused):
    return False


def _check_optimizer(opt):
  if opt is None:
    return
  def number(key):
    value = opt.get(key)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
      _fail(f"optimizer.{key}={value!r}: must be a finite number")
    return value
  if "lr" in opt and number("lr") < 0:
    _fail(f"optimizer.lr={opt.lr}: must be >= 0")
  for key in ("b1", "b2"):
    if key in opt and not 0 <= number(key) < 1:
      _fail(f"optimizer.{key}={opt[key]}: must be in [0, 1)")
  if "eps" in opt and number("eps") <= 0:
    _fail(f"optimizer.eps={opt.eps}: must be > 0")
  for key in ("weight_decay", "clip_norm"):
    if key in opt and number(key) < 0:
      _fail(f"optimizer.{key}={opt[key]}: must be >= 0 (0 turns it off)")
  if "end_lr_frac" in opt and not 0 <= number("end_lr_frac") <= 1:
    _fail(f"optimizer.end_lr_frac={opt.end_lr_frac}: must be in [0, 1]")
  if "warmup_steps" in opt and not (isinstance(opt.warmup_steps, int) and opt.warmup_steps >= 0):
    _fail(f"optimizer.warmup_steps={opt.warmup_steps!r}: must be an integer >= 0")
  if opt.get("schedule", "cosine") not in ("cosine", "constant"):
    _fail(f"optimizer.schedule={opt.schedule!r}: unknown; valid: cosine, constant")
  if opt.get("name", "adamw") != "adamw":
    _fail(f"optimizer.name={opt.name!r}: unknown; valid: adamw")


def tokenize_lengths(pp: str) -> Sequence[int]:
  """The N of every `tokenize(N)` op in a preprocessing string."""
  return [int(n) for n in re.findall(r"(?:^|\|)\s*tokenize\(\s*(\d+)\s*\)", pp or "")]


def _check_lengths(config):
  """data.max_len == every tokenize(N) of the pp strings == model.text.max_len."""
  data, model = config.get("data"), config.get("model")
  if data is None or "max_len" not in data:
    return
  for pp_key in ("pp_train", "pp_eval"):
    for n in tokenize_lengths(data.get(pp_key)):
      if n != data.max_len:
        _fail(f"data.max_len={data.max_len} but data.{pp_key} has tokenize({n}): "
              "set them to the same length")
  text = model.get("text") if model is not None else None
  if text is not None and "max_len" in text and text.max_len != data.max_len:
    _fail(f"model.text.max_len={text.max_len} but data.max_len={data.max_len}: "
          "the text tower must take the sequences the data makes; set both")
  caption = (config.get("evals") or {}).get("captioning")
  if caption is not None and caption.get("max_len") is not None and text is not None \
      and caption.max_len > text.max_len:
    _fail(f"evals.captioning.max_len={caption.max_len} is longer than "
          f"model.text.max_len={text.max_len}")


def _check_image_grid(config):
  """A patch stem tiles the image exactly; a conv stem halves it log2(patch) times."""
  data, model = config.get("data"), config.get("model")
  image = model.get("image") if model is not None else None
  if data is None or image is None or "patch_size" not in image or "image_size" not in data:
    return
  size, patch = data.image_size, image.patch_size
  if not (isinstance(size, int) and size >= 1) or not (isinstance(patch, int) and patch >= 1):
    _fail(f"data.image_size={size!r} and model.image.patch_size={patch!r} must be integers >= 1")
  if size % patch:
    _fail(f"data.image_size={size} is not a multiple of model.image.patch_size={patch}")


def check_data(config) -> None:
  """What the preprocessing really makes (one training example through data.pp_train and
  data.pp_eval) against data.image_size, data.max_len and data.num_frames: the model is built
  and the step compiled for the config's sizes, so they must be the data's."""
  from vlx.data import pipeline, sources  # pylint: disable=g-import-not-at-top
  data = config.data
  keys = tuple(data.get("keys", ("image", "text")))
  handle = sources.load_dataset(data)
  expected = {"image": (data.image_size, data.image_size, 3), "text": (data.max_len,)}
  resize = "change its size ops to match, or the key"
  # Per key: the config fields that say its size, and how to make them agree.
  fields = {"image": (f"data.image_size={data.image_size}", resize),
            "text": (f"data.max_len={data.max_len}", resize)}
  # A clip's frame count too, for training (evaluators may read other counts: a split of
  # reasoning_video's clips at 16 frames, `test_16f`, scored by a model trained on 8).
  train_keys = ["image", "text"]
  if data.get("num_frames") and data.get("image_size"):
    train_keys.append("video")
    expected["video"] = (data.num_frames, data.image_size, data.image_size, 3)
    fields["video"] = (f"data.num_frames={data.num_frames} and data.image_size="
                       f"{data.image_size}", "set data.num_frames (and data.image_size) to "
                       "the clips', or change its ops")
  for pp_key, wanted in (("pp_train", [k for k in train_keys if k in keys]),
                         ("pp_eval", [k for k in ("image",) if k in keys])):
    if not wanted:
      continue
    spec = pipeline.example_spec(handle, data.train_split, data[pp_key], wanted)
    for key in wanted:
      shape = tuple(spec[key][0])
      if shape != expected[key]:
        what, fix = fields[key]
        _fail(f"{what} but data.{pp_key} on split {data.train_split!r} makes {key} of shape "
              f"{shape} (wanted {expected[key]}): {fix}")
