"""grain input pipelines: deterministic, sharded per host, resumable, skipping corrupt records."""

from __future__ import annotations

import logging
import threading
from typing import Dict, Iterator, Optional

import grain
import jax
import numpy as np

from vlx.data import pp_ops
from vlx.data.sources import DatasetHandle


class SkipCounter:
  """Counts records the pipeline dropped as corrupt (thread-safe, logged as a metric)."""

  def __init__(self):
    self._lock = threading.Lock()
    self.count = 0
    self.last_error = ""

  def add(self, error: str):
    with self._lock:
      self.count += 1
      self.last_error = error
      if self.count <= 5:
        logging.warning("skipping corrupt record (%d so far): %s", self.count, error)


class _SafePreprocess:
  """Applies the pp ops; a record that fails to decode becomes None and is counted."""

  def __init__(self, fn, counter: SkipCounter):
    self.fn, self.counter = fn, counter

  def __call__(self, record, rng):
    try:
      return self.fn(record, rng)
    except pp_ops.CorruptRecord as e:
      self.counter.add(str(e))
      return None


def _not_none(x):
  return x is not None


class TrainIterator:
  """Infinite iterator of host-local numpy batches with checkpointable state."""

  def __init__(self, handle: DatasetHandle, split: str, pp: str, local_batch_size: int,
               seed: int, num_threads: int = 2, prefetch: int = 4,
               keys=("image", "text")):
    self.counter = SkipCounter()
    source = handle.split(split)
    ds = grain.MapDataset.source(source)
    # Each host reads only its own shard of the records.
    ds = ds[jax.process_index()::jax.process_count()]
    ds = ds.seed(seed).shuffle().repeat(None)
    fn = pp_ops.parse(pp, handle)
    keep = pp_ops.keep(handle, *keys)
    ds = ds.random_map(_SafePreprocess(lambda r, rng: keep(fn(r, rng), rng), self.counter))
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads,
                                              prefetch_buffer_size=prefetch * local_batch_size))
    it = it.filter(_not_none).batch(local_batch_size, drop_remainder=True)
    self._dataset = it
    self._iter = iter(it)

  def __iter__(self) -> Iterator[Dict[str, np.ndarray]]:
    return self

  def __next__(self) -> Dict[str, np.ndarray]:
    return next(self._iter)

  def get_state(self) -> dict:
    return {"grain": self._iter.get_state(), "skipped": self.counter.count}

  def set_state(self, state: dict):
    self._iter = iter(self._dataset)
    self._iter.set_state(state["grain"])
    self.counter.count = int(state.get("skipped", 0))


def load_eval_arrays(handle: DatasetHandle, split: str, pp: str, max_len: int,
                     limit: Optional[int] = None) -> Dict[str, np.ndarray]:
  """A whole (small) eval split as host numpy arrays: images, all captions tokenized, labels.

  Evaluation splits are read in order, every caption kept (retrieval scores
  against all references, as COCO/Flickr retrieval does); corrupt records are
  skipped and counted here too.
  """
  source = handle.split(split)
  fn = pp_ops.parse(pp, handle)
  images, captions, labels, skipped = [], [], [], 0
  n = len(source) if limit is None else min(limit, len(source))
  rng = np.random.default_rng(0)
  for i in range(n):
    try:
      ex = fn(source[i], rng)
    except pp_ops.CorruptRecord:
      skipped += 1
      continue
    images.append(ex["image"])
    captions.append(ex["captions"])
    labels.append(ex.get("label", -1))
  num_caps = min(len(c) for c in captions)
  texts = [c for caps in captions for c in caps[:num_caps]]
  tokens = handle.tokenizer.encode(texts, max_len).reshape(len(captions), num_caps, max_len)
  return {"image": np.stack(images), "text": tokens, "label": np.asarray(labels, np.int32),
          "caption_strings": np.array(texts, dtype=object).reshape(len(captions), num_caps),
          "skipped": skipped}
