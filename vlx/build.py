"""Model construction from a config, shared by training, prediction, weight conversion and
`pretrained`: none of them needs the training loop to build a model or its abstract params."""

from __future__ import annotations

import importlib
from typing import Dict

import flax.linen as nn
import jax
import numpy as np

from vlx import registry
from vlx.data import pipeline, sources


def _hashable(x):
  """ConfigDict/dict/list -> FrozenDict/tuple, so modules stay hashable (jit caches key on them)."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from flax.core import FrozenDict  # pylint: disable=g-import-not-at-top
  if isinstance(x, ml_collections.ConfigDict):
    x = x.to_dict()
  if isinstance(x, dict):
    return FrozenDict({k: _hashable(v) for k, v in x.items()})
  if isinstance(x, (list, tuple)):
    return tuple(_hashable(v) for v in x)
  return x


def fit_vocab(config, handle):
  """The text vocabulary holds at least every id the dataset's tokenizer can emit."""
  with config.unlocked():
    if config.model.get("text") is not None and "vocab_size" in config.model.text:
      config.model.text.vocab_size = max(config.model.text.vocab_size, handle.tokenizer.vocab_size)


def import_components(config) -> None:
  """Imports the modules named by `config.imports` (module paths, e.g. a family of one's own
  outside vlx) so that their decorators register what the config names; called before
  anything is built. The built-in components need no naming: the registry's catalogue has them."""
  paths = config.get("imports", ()) or ()
  for path in (paths,) if isinstance(paths, str) else paths:
    try:
      importlib.import_module(path)
    except Exception as e:  # a missing module, or one that fails to import (SyntaxError, ...)
      raise ImportError(f"config.imports: cannot import {path!r}: {type(e).__name__}: "
                        f"{' '.join(str(e).split())}") from e


def build_model(config):
  """The registered model `config.model.name`, constructed with the other `config.model`
  keys (made hashable: a Flax module is a jit cache key)."""
  import_components(config)
  kwargs = {k: _hashable(v) for k, v in config.model.items()}
  name = kwargs.pop("name")
  return registry.MODELS.get(name)(**kwargs)


_SPEC_CACHE: Dict[str, Dict] = {}


def batch_keys(config):
  """The keys of a training batch: `config.data.keys`, or an image-text pair by default."""
  return tuple(config.data.get("keys", ("image", "text")))


def dummy_batch(config) -> Dict[str, np.ndarray]:
  """A global batch of zeros with the config's shapes (for shapes-first init and AOT compile).

  Image and text shapes follow from the config, and so do a video's and its frame mask's when
  `data.num_frames` is set (`[T, image_size, image_size, 3]`, `[T]`: a paper-size variant
  builds without its data); any
  other key (`config.data.keys`: questions, boxes, answer scores, ...) takes its shape from one
  preprocessed training example."""
  b = config.batch_size
  s = config.data.image_size
  out = {"image": np.zeros((b, s, s, 3), np.float32),
         "text": np.zeros((b, config.data.max_len), np.int32)}
  if config.data.get("num_frames"):
    out["video"] = np.zeros((b, config.data.num_frames, s, s, 3), np.float32)
    out["frame_mask"] = np.ones((b, config.data.num_frames), bool)  # read when in data.keys
  keys = batch_keys(config)
  others = [k for k in keys if k not in out]
  if others:
    cache_key = config.data.to_json()
    if cache_key not in _SPEC_CACHE:
      handle = sources.load_dataset(config.data)
      _SPEC_CACHE[cache_key] = pipeline.example_spec(handle, config.data.train_split,
                                                     config.data.pp_train, others)
    for k, (shape, dtype) in _SPEC_CACHE[cache_key].items():
      out[k] = np.zeros((b,) + tuple(shape), dtype)
  return {k: out[k] for k in keys}


def abstract_params(config, model, mesh, rules):
  """The model's params as boxed ShapeDtypeStructs (logical axes kept): no FLOP spent."""
  batch = {k: v[:1] for k, v in dummy_batch(config).items()}
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    return jax.eval_shape(lambda r: model.init(r, batch, train=False)["params"],
                          jax.random.key(config.seed))
