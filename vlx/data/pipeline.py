"""grain input pipelines: deterministic, one global order whatever the process count, each
process reading only its rows; resumable; skipping corrupt records."""

from __future__ import annotations

import logging
import sys
import threading
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import grain
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


class _BatchRows(grain.MapDataset):
  """Element j is row `rows[j % L]` of global batch `j // L` of the parent (L = len(rows)).

  The parent is the global record stream, global batch b being its elements
  [b * B, (b + 1) * B). Remapping indices (not elements) means the parent's
  lazy reads and preprocessing run only for this process's rows.
  """

  def __init__(self, parent: grain.MapDataset, global_batch_size: int, rows: Sequence[int]):
    super().__init__(parent)
    self._global = int(global_batch_size)
    self._rows = tuple(int(r) for r in rows)

  def __len__(self) -> int:
    return len(self._parent) // self._global * len(self._rows)

  def __str__(self) -> str:
    return f"_BatchRows(global_batch_size={self._global}, rows={len(self._rows)})"

  def _global_index(self, index: int) -> int:
    batch, row = divmod(int(index), len(self._rows))
    return batch * self._global + self._rows[row]

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    return self._parent[self._global_index(index)]

  def _getitems(self, indices: Sequence[int]):
    return self._parent._getitems([self._global_index(i) for i in indices])  # pylint: disable=protected-access


class _UnitRecords(grain.MapDataset):
  """Element i is record `(units[i // block]) * block + i % block` of `source`: the records of
  a shuffled stream of units (blocks of `block` consecutive records) in their stored order.

  Why: a dataset that stores related records side by side (a video and its temporal twin)
  can keep them in one batch, where the contrastive loss sees each as the other's hard
  negative. Still index-based (lazy, deterministic, resumable); a dataset whose length is not
  a multiple of `block` drops its last partial unit.
  """

  def __init__(self, units: grain.MapDataset, source, block: int):
    super().__init__(units)
    self._source, self._block = source, int(block)

  def __len__(self) -> int:
    return min(len(self._parent) * self._block, sys.maxsize)

  def __str__(self) -> str:
    return f"_UnitRecords(block={self._block})"

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    unit, offset = divmod(int(index), self._block)
    return self._source[int(self._parent[unit]) * self._block + offset]


def shuffled_stream(source, seed: int, shuffle_block: int = 1) -> grain.MapDataset:
  """All records of `source`, shuffled with `seed` and repeated (each epoch reshuffled); with
  `shuffle_block` > 1, whole blocks of consecutive records are shuffled (see _UnitRecords)."""
  if shuffle_block == 1:
    return grain.MapDataset.source(source).seed(seed).shuffle().repeat(None)
  num_units = len(source) // shuffle_block
  if num_units < 1:
    raise ValueError(f"data.shuffle_block={shuffle_block} exceeds the split's {len(source)} "
                     "records")
  units = grain.MapDataset.range(num_units).seed(seed).shuffle().repeat(None)
  return _UnitRecords(units, source, shuffle_block)


class TrainIterator:
  """Infinite iterator of host-local numpy batches with checkpointable state.

  The data order does not depend on the number of processes: every process
  builds the same global stream (all records of the split, shuffled with
  `seed`, repeated, each epoch reshuffled; the preprocessing randomness of a
  record is seeded by its position in that stream), global batch b is
  elements [b * B, (b + 1) * B) of it (B = `global_batch_size`), and this
  iterator yields rows `rows` of each global batch, in that order. Only those
  rows are read and decoded here. With `rows` = the rows that this process's
  devices hold under the batch sharding (`vlx.parallel.mesh.process_batch_rows`),
  `jax.make_array_from_process_local_data` reassembles exactly global batch b
  on every step, whatever the process count.

  Defaults (`global_batch_size=local_batch_size`, all rows): one process reads
  whole global batches.

  A corrupt record is skipped (counted in `counter`) and the process's next
  record takes its place, so from there on that process's rows are shifted by
  one: a run that meets corrupt records is still deterministic and resumable,
  but no longer identical across process counts.
  """

  def __init__(self, handle: DatasetHandle, split: str, pp: str, local_batch_size: int,
               seed: int, num_threads: int = 2, prefetch: int = 4,
               keys=("image", "text"), global_batch_size: Optional[int] = None,
               rows: Optional[Sequence[int]] = None, shuffle_block: int = 1):
    global_batch_size = int(global_batch_size or local_batch_size)
    rows = tuple(range(local_batch_size)) if rows is None else tuple(int(r) for r in rows)
    if len(rows) != local_batch_size:
      raise ValueError(f"{len(rows)} rows given for a local batch of {local_batch_size}")
    if not rows or min(rows) < 0 or max(rows) >= global_batch_size:
      raise ValueError(f"rows must lie in [0, {global_batch_size}): {rows}")
    self.counter = SkipCounter()
    if shuffle_block > 1 and global_batch_size % shuffle_block:
      raise ValueError(f"batch_size {global_batch_size} is not a multiple of "
                       f"data.shuffle_block={shuffle_block}: a block would straddle two batches")
    self._layout = {"global_batch_size": global_batch_size, "rows": list(rows)}
    if shuffle_block > 1:  # recorded only when used: older states stay comparable
      self._layout["shuffle_block"] = int(shuffle_block)
    source = handle.split(split)
    # One global order on every process: all records, shuffled with the same seed.
    ds = shuffled_stream(source, seed, shuffle_block)
    fn = pp_ops.parse(pp, handle)
    keep = pp_ops.keep(handle, *keys)
    # Lazy: a record is read and preprocessed only when a process asks for its index.
    ds = ds.random_map(_SafePreprocess(lambda r, rng: keep(fn(r, rng), rng), self.counter))
    if rows != tuple(range(global_batch_size)):
      ds = _BatchRows(ds, global_batch_size, rows)
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
    return {"grain": self._iter.get_state(), "skipped": self.counter.count,
            "layout": self._layout}

  def set_state(self, state: dict):
    # grain's position counts this iterator's own rows: it means the same data only for the
    # same global batch size and rows (an older state without a layout is taken as it is).
    layout = state.get("layout")
    if layout is not None and layout != self._layout:
      raise ValueError(f"data state was saved for global batch {layout['global_batch_size']} "
                       f"and {len(layout['rows'])} rows per process, this run reads "
                       f"{self._layout['global_batch_size']} and {len(self._layout['rows'])}: "
                       "it cannot resume the same data order")
    self._iter = iter(self._dataset)
    self._iter.set_state(state["grain"])
    self.counter.count = int(state.get("skipped", 0))


def example_spec(handle: DatasetHandle, split: str, pp: str, keys: Sequence[str],
                 max_tries: int = 16) -> Dict[str, Tuple[Tuple[int, ...], np.dtype]]:
  """{key: (shape, dtype)} of one preprocessed example: the shapes a model is built and a
  step compiled against, read from the data instead of restated in the config."""
  source = handle.split(split)
  fn = pp_ops.parse(pp, handle)
  for i in range(min(max_tries, len(source))):
    try:
      ex = fn(source[i], np.random.default_rng(i))
    except pp_ops.CorruptRecord:
      continue
    missing = [k for k in keys if k not in ex]
    if missing:
      raise KeyError(f"preprocessing {pp!r} produces no {missing}; it produces {sorted(ex)}")
    return {k: (np.asarray(ex[k]).shape, np.asarray(ex[k]).dtype) for k in keys}
  raise ValueError(f"no readable record among the first {max_tries} of split {split!r}")


def iter_split(handle: DatasetHandle, split: str, pp: str, batch_size: int,
               limit: Optional[int] = None, seed: int = 0,
               indices: Optional[Sequence[int]] = None,
               counter: Optional[SkipCounter] = None) -> Iterator[List[dict]]:
  """A split's records in order through `pp` (one rng seeded with `seed`, drawn in record
  order), yielded as lists of `batch_size` examples (the last may be shorter).

  Evaluation streams through this, so the host holds at most one batch of decoded images
  whatever the split's length. `indices` reads only those records (in that order) instead of
  the first `limit`; each example carries its record index as `_index`. Corrupt records are
  skipped and counted in `counter`.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  source = handle.split(split)
  if indices is None:
    indices = range(len(source) if limit is None else min(limit, len(source)))
  fn = pp_ops.parse(pp, handle)
  rng = np.random.default_rng(seed)
  rows = []
  for i in indices:
    try:
      ex = fn(source[int(i)], rng)
    except pp_ops.CorruptRecord as e:
      if counter is not None:
        counter.add(str(e))
      continue
    ex["_index"] = int(i)
    rows.append(ex)
    if len(rows) == batch_size:
      yield rows
      rows = []
  if rows:
    yield rows


def stack(rows: Sequence[dict], keys: Sequence[str]) -> Dict[str, np.ndarray]:
  """Examples -> {key: array with a leading example axis}."""
  return {k: np.stack([np.asarray(r[k]) for r in rows]) for k in keys}


def _read_split(handle: DatasetHandle, split: str, pp: str, limit: Optional[int], seed: int):
  """The first `limit` records of a split, in order, through `pp` with one seeded rng ->
  (examples, number of corrupt records skipped)."""
  counter = SkipCounter()
  rows = [ex for batch in iter_split(handle, split, pp, 1 << 30, limit, seed, counter=counter)
          for ex in batch]
  return rows, counter.count


def load_task_arrays(handle: DatasetHandle, split: str, pp: str, keys: Sequence[str],
                     limit: Optional[int] = None, seed: int = 0) -> Dict[str, np.ndarray]:
  """The first `limit` examples of a split through `pp` (rng seeded: the same questions and
  expressions every time), stacked per key; corrupt records are skipped and counted.
  Holds the whole selection in memory: for small selections (tests, tools); evaluators
  stream with `iter_split`."""
  rows, skipped = _read_split(handle, split, pp, limit, seed)
  if not rows:
    raise ValueError(f"split {split!r}: no readable record")
  out = stack(rows, keys)
  out["skipped"] = skipped
  return out


def caption_tokens(tokenizer, captions: Sequence[Sequence[str]], max_len: int):
  """Every image's first K captions (K = the smallest caption count), tokenized ->
  (tokens [N, K, max_len], caption strings [N, K])."""
  num_caps = min(len(c) for c in captions)
  texts = [c for caps in captions for c in caps[:num_caps]]
  tokens = tokenizer.encode(texts, max_len).reshape(len(captions), num_caps, max_len)
  return tokens, np.array(texts, dtype=object).reshape(len(captions), num_caps)


def load_eval_arrays(handle: DatasetHandle, split: str, pp: str, max_len: int,
                     limit: Optional[int] = None) -> Dict[str, np.ndarray]:
  """A whole (small) eval split as host numpy arrays: images, all captions tokenized, labels.

  Evaluation splits are read in order, every caption kept (retrieval scores
  against all references, as COCO/Flickr retrieval does); corrupt records are
  skipped and counted here too. Holds every image: for small splits (tools, tests);
  evaluators stream with `iter_split`.
  """
  rows, skipped = _read_split(handle, split, pp, limit, seed=0)
  tokens, strings = caption_tokens(handle.tokenizer, [ex["captions"] for ex in rows], max_len)
  labels = [ex.get("label", -1) for ex in rows]
  return {"image": np.stack([ex["image"] for ex in rows]), "text": tokens,
          "label": np.asarray(labels, np.int32), "caption_strings": strings,
          "skipped": skipped}
