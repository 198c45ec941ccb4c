"""What every evaluator shares: a split read in batches (`SplitReader`: the host never holds
more than one batch of images) and sharded, jitted embedding of host arrays in fixed batches."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, Dict, Hashable, Iterator, List, Optional, Sequence, Tuple

import jax
import numpy as np

from vlx.data import pipeline
from vlx.data.sources import DatasetHandle
from vlx.parallel import mesh as mesh_lib


@dataclasses.dataclass
class EvalContext:
  model: Any
  mesh: Any
  handle: DatasetHandle
  data_config: Any
  batch_size: int = 256
  workdir: Optional[str] = None  # where evaluators may write artifacts (galleries, ...)


_JIT_CACHE: Dict[Tuple[Hashable, Any], Callable] = {}


def _jitted(key: Hashable, fn: Callable, mesh):
  """One compiled program per (key, mesh): evaluators rebuild `fn` closures every call."""
  if (key, mesh) not in _JIT_CACHE:
    # Replicated outputs: every process (multi-host) can fetch the results it needs.
    _JIT_CACHE[(key, mesh)] = jax.jit(fn, out_shardings=mesh_lib.replicated(mesh))
  return _JIT_CACHE[(key, mesh)]


def padded_batch_size(ctx: EvalContext, n: int) -> int:
  """The batch `run_batched` pads to for n examples: ctx.batch_size (or n, when smaller)
  rounded up to a multiple of the mesh's batch shards."""
  per = mesh_lib.batch_axis_size(ctx.mesh)
  return max(per, (min(ctx.batch_size, n) + per - 1) // per * per)


def run_batched(ctx: EvalContext, key: Hashable, fn: Callable, params, x, pad_value=0,
                batch_size: Optional[int] = None):
  """Runs jitted `fn(params, batch)` over x in fixed batches sharded across the data axes.

  x is an array or a dict of arrays with one leading example axis (fusion models take
  dict batches); the result has the same structure as fn's output, one row per example.
  `key` identifies fn for the compile cache: everything fn's result depends on besides
  its arguments (the model, the method, the decoding config). `batch_size` fixes the padded
  batch (streamed chunks of one split then share one compiled program and the exact
  batches an all-at-once call would run); default `padded_batch_size(ctx, len(x))`.

  Works when the mesh spans processes (tests/test_multiprocess.py): every process holds the
  same host array x, `device_put` places only its addressable shards, and the outputs are
  replicated, so each process reads the whole result from its own devices.
  """
  n = jax.tree.leaves(x)[0].shape[0]
  if n == 0:
    raise ValueError(f"nothing to run {key} on")
  per = mesh_lib.batch_axis_size(ctx.mesh)
  bs = padded_batch_size(ctx, n) if batch_size is None else -(-int(batch_size) // per) * per
  jitted = _jitted((ctx.model, key), fn, ctx.mesh)
  outs = []
  with jax.set_mesh(ctx.mesh):
    for start in range(0, n, bs):
      chunk = jax.tree.map(lambda a: a[start:start + bs], x)  # noqa: B023
      pad = bs - jax.tree.leaves(chunk)[0].shape[0]
      if pad:
        chunk = jax.tree.map(lambda a: np.concatenate(  # noqa: B023
            [a, np.full((pad,) + a.shape[1:], pad_value, a.dtype)]), chunk)
      arr = jax.tree.map(lambda a: jax.device_put(a, mesh_lib.batch_sharding(ctx.mesh, a.ndim)),
                         chunk)
      out = jax.device_get(jitted(params, arr))
      outs.append(jax.tree.map(lambda o: np.asarray(o)[:bs - pad], out))  # noqa: B023
  return jax.tree.map(lambda *o: np.concatenate(o), *outs)


def embed(ctx: EvalContext, params, method: str, x: np.ndarray,
          batch_size: Optional[int] = None) -> np.ndarray:
  """Runs `model.<method>` over x in batches sharded across the data axes."""
  model = ctx.model
  return run_batched(ctx, ("embed", method),
                     lambda p, b: model.apply({"params": p}, b, method=method), params, x,
                     batch_size=batch_size)


class SplitReader:
  """An evaluation split read in order, `batch_size` preprocessed examples at a time.

  Iterating yields lists of example dicts; `map` keeps one batch of decoded images alive at a
  time, whatever the split's length (COCO's val split as float32 224 px would be ~3 GB).
  `batch_size` is what `run_batched` would pad the whole selection to, so embedding the
  batches one by one runs exactly the batches (and gives exactly the numbers) of one call
  on the stacked split. Every process reads the same batches (`run_batched`'s contract).
  Corrupt records are skipped; `skipped` counts them for the last pass.
  """

  def __init__(self, ctx: EvalContext, split: str, pp: Optional[str] = None,
               limit: Optional[int] = None, seed: int = 0,
               indices: Optional[Sequence[int]] = None):
    self.ctx, self.split, self.seed = ctx, split, seed
    self.pp = pp or ctx.data_config.pp_eval
    source = ctx.handle.split(split)  # an unknown split fails when the evaluator is built
    self.indices = None if indices is None else [int(i) for i in indices]
    self.limit = limit
    n = len(self.indices) if self.indices is not None else (
        len(source) if limit is None else min(int(limit), len(source)))
    if n == 0:
      raise ValueError(f"split {split!r}: nothing to evaluate (no records selected)")
    self.batch_size = padded_batch_size(ctx, n)
    self.skipped = 0

  def __iter__(self) -> Iterator[List[dict]]:
    counter = pipeline.SkipCounter()
    yield from pipeline.iter_split(self.ctx.handle, self.split, self.pp, self.batch_size,
                                   self.limit, self.seed, self.indices, counter)
    self.skipped = counter.count
    if counter.count:
      logging.warning("evaluation split %r: %d corrupt record(s) skipped (last: %s)",
                      self.split, counter.count, counter.last_error)

  def map(self, fn: Callable[[List[dict]], Any]) -> List[Any]:
    """[fn(batch) for each batch], dropping each batch before the next is read: one batch of
    images alive at a time (fn should return only small things: embeddings, labels)."""
    out, batches = [], iter(self)
    while (rows := next(batches, None)) is not None:
      out.append(fn(rows))
      rows = None  # noqa: F841 (released before the next batch is decoded)
    return out

  def embed(self, params, method: str, rows: Sequence[dict], key: str = "image") -> np.ndarray:
    """`model.<method>` of one batch's `key` field."""
    return embed(self.ctx, params, method, pipeline.stack(rows, [key])[key], self.batch_size)


def contrastive_scale(params, max_scale: float = 100.0) -> float:
  """The temperature a contrastive model scores with: exp(`logit_scale`), capped as the
  objectives cap it (re-ranking adds it to a cross-encoder's log-odds)."""
  return float(np.exp(min(float(np.asarray(params["logit_scale"])), np.log(max_scale))))
