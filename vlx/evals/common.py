"""What every evaluator shares: sharded, jitted embedding of host arrays in fixed batches."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Hashable, Optional, Tuple

import jax
import numpy as np

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


def run_batched(ctx: EvalContext, key: Hashable, fn: Callable, params, x, pad_value=0):
  """Runs jitted `fn(params, batch)` over x in fixed batches sharded across the data axes.

  x is an array or a dict of arrays with one leading example axis (fusion models take
  dict batches); the result has the same structure as fn's output, one row per example.
  `key` identifies fn for the compile cache: everything fn's result depends on besides
  its arguments (the model, the method, the decoding config).

  Works when the mesh spans processes (tests/test_multiprocess.py): every process holds the
  same host array x, `device_put` places only its addressable shards, and the outputs are
  replicated, so each process reads the whole result from its own devices.
  """
  n = jax.tree.leaves(x)[0].shape[0]
  if n == 0:
    raise ValueError(f"nothing to run {key} on")
  per = mesh_lib.batch_axis_size(ctx.mesh)
  bs = max(per, (min(ctx.batch_size, n) + per - 1) // per * per)
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


def embed(ctx: EvalContext, params, method: str, x: np.ndarray) -> np.ndarray:
  """Runs `model.<method>` over x in batches sharded across the data axes."""
  model = ctx.model
  return run_batched(ctx, ("embed", method),
                     lambda p, b: model.apply({"params": p}, b, method=method), params, x)
