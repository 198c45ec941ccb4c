"""What every evaluator shares: sharded, jitted embedding of host arrays in fixed batches."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

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


@functools.lru_cache(maxsize=None)
def _jitted(model, method: str, mesh):
  # Replicated outputs: every process (multi-host) can fetch the embeddings it needs.
  return jax.jit(lambda params, x: model.apply({"params": params}, x, method=method),
                 out_shardings=mesh_lib.replicated(mesh))


def embed(ctx: EvalContext, params, method: str, x: np.ndarray) -> np.ndarray:
  """Runs `model.<method>` over x in batches sharded across the data axes."""
  n = x.shape[0]
  if n == 0:
    raise ValueError(f"nothing to embed for {method}")
  per = mesh_lib.batch_axis_size(ctx.mesh)
  bs = max(per, (min(ctx.batch_size, n) + per - 1) // per * per)
  fn = _jitted(ctx.model, method, ctx.mesh)
  outs = []
  with jax.set_mesh(ctx.mesh):
    for start in range(0, n, bs):
      chunk = x[start:start + bs]
      pad = bs - chunk.shape[0]
      if pad:
        chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
      arr = jax.device_put(chunk, mesh_lib.batch_sharding(ctx.mesh, chunk.ndim))
      outs.append(np.asarray(jax.device_get(fn(params, arr)))[:bs - pad])
  return np.concatenate(outs)
