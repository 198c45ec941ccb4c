"""Device mesh from config, logical->mesh sharding rules (checked), multi-host setup."""

from __future__ import annotations

import logging
from typing import Dict, Sequence, Tuple

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# Logical axis -> mesh axes. Parameters: `embed` is split over fsdp (ZeRO-3
# style), `mlp`/`heads`/`vocab` over tensor (Megatron style). Activations: the
# batch over data x fsdp, hidden dims over tensor.
DEFAULT_RULES = (
    ("act_batch", ("data", "fsdp")),
    ("act_len", None),
    ("act_embed", None),
    ("act_mlp", "tensor"),
    ("act_heads", "tensor"),
    ("act_kv", None),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("vocab", "tensor"),
    ("joint", "tensor"),
    ("memory", None),
    ("patch", None),
    ("pos", None),
    ("norm", None),
    ("layers", None),
    ("conv_in", None),
    ("conv_out", "tensor"),
    ("visual_in", None),   # region / patch features entering a cross-modal stack
    ("box", None),         # box geometry
    ("classes", None),     # answer and region-class heads
)


class ShardingError(ValueError):
  pass


def maybe_initialize_distributed(cfg):
  """jax.distributed.initialize from config, or from the cluster's env (TPU, SLURM)."""
  if not cfg.get("enabled", False):
    return
  kwargs = {}
  if cfg.get("coordinator_address"):
    kwargs = dict(coordinator_address=cfg.coordinator_address,
                  num_processes=int(cfg.num_processes), process_id=int(cfg.process_id))
  if cfg.get("cpu_collectives"):
    jax.config.update("jax_cpu_collectives_implementation", cfg.cpu_collectives)
  jax.distributed.initialize(**kwargs)
  logging.info("jax.distributed: process %d of %d, %d local / %d global devices",
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())


def mesh_shape(mesh_cfg, num_devices: int) -> Tuple[int, ...]:
  sizes = [int(mesh_cfg.get(a, 1)) for a in MESH_AXES]
  fill = [i for i, s in enumerate(sizes) if s == -1]
  if len(fill) > 1:
    raise ShardingError("at most one of config.mesh.{data,fsdp,tensor} may be -1")
  known = int(np.prod([s for s in sizes if s != -1]))
  if fill:
    if num_devices % known:
      raise ShardingError(f"{num_devices} devices do not divide into mesh {dict(zip(MESH_AXES, sizes))}")
    sizes[fill[0]] = num_devices // known
  if int(np.prod(sizes)) != num_devices:
    raise ShardingError(
        f"mesh {dict(zip(MESH_AXES, sizes))} needs {int(np.prod(sizes))} devices, JAX has {num_devices}")
  return tuple(sizes)


def make_mesh(mesh_cfg, devices=None) -> jax.sharding.Mesh:
  devices = devices if devices is not None else jax.devices()
  shape = mesh_shape(mesh_cfg, len(devices))
  return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
                       devices=devices)


def check_rules(rules: Sequence[Tuple[str, object]], mesh: jax.sharding.Mesh):
  """Conflicts fail loudly: a logical name given twice, or a mesh axis that does not exist."""
  seen: Dict[str, object] = {}
  for logical, target in rules:
    if logical in seen and seen[logical] != target:
      raise ShardingError(f"sharding rule conflict: {logical!r} -> {seen[logical]} and {target}")
    seen[logical] = target
    targets = target if isinstance(target, (tuple, list)) else (target,)
    for t in targets:
      if t is not None and t not in mesh.axis_names:
        raise ShardingError(f"sharding rule {logical!r} -> {t!r}: no such mesh axis "
                            f"(mesh has {mesh.axis_names})")
    if len([t for t in targets if t is not None]) != len({t for t in targets if t is not None}):
      raise ShardingError(f"sharding rule {logical!r} names a mesh axis twice: {target}")


def rules_from_config(cfg) -> Tuple[Tuple[str, object], ...]:
  rules = cfg.get("rules", None) or DEFAULT_RULES
  return tuple((r[0], tuple(r[1]) if isinstance(r[1], list) else r[1]) for r in rules)


def _fit_spec(spec: P, shape, mesh, name: str) -> P:
  """Drop mesh axes that do not divide a dimension (that dim is then replicated)."""
  out, used = [], set()
  for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
    if axes is None:
      out.append(None)
      continue
    axes_t = axes if isinstance(axes, tuple) else (axes,)
    if used & set(axes_t):
      raise ShardingError(f"{name}: mesh axes {axes_t} used twice in {spec}")
    size = int(np.prod([mesh.shape[a] for a in axes_t]))
    if dim % size:
      logging.info("%s: dim %d not divisible by %s=%d, replicated", name, dim, axes_t, size)
      out.append(None)
    else:
      out.append(axes)
      used |= set(axes_t)
  return P(*out)


def unbox(tree):
  """Strip logical-partitioning boxes without applying sharding constraints (abstract trees)."""
  return jax.tree.map(
      lambda x: x.unbox(apply_constraint=False) if isinstance(x, nn.meta.AxisMetadata) else x,
      tree, is_leaf=lambda x: isinstance(x, nn.meta.AxisMetadata))


def logical_to_shardings(abstract_boxed, mesh, rules):
  """Boxed (logically partitioned) abstract tree -> NamedShardings of the unboxed tree."""
  specs = nn.get_partition_spec(abstract_boxed)
  mesh_specs = nn.logical_to_mesh(specs, rules)
  unboxed = unbox(abstract_boxed)

  def to_sharding(path, spec, leaf):
    name = jax.tree_util.keystr(path)
    return NamedSharding(mesh, _fit_spec(spec, leaf.shape, mesh, name))

  return jax.tree_util.tree_map_with_path(
      to_sharding, mesh_specs, unboxed, is_leaf=lambda x: isinstance(x, P))


def _path_keys(path) -> Tuple[str, ...]:
  return tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def like_param_shardings(abstract_tree, abstract_params, param_shardings, mesh):
  """Shardings for a tree holding copies of the params (optimizer moments, moving averages, ...).

  A leaf whose key path ends with a parameter's path and has its shape takes that
  parameter's sharding; everything else (counts, scalars) is replicated. Matching
  by path suffix works through any optax wrapper (masked, multi_transform, chains),
  where structure-matching helpers break on masked-out nodes.
  """
  by_path = {}
  for (path, leaf), sharding in zip(jax.tree_util.tree_flatten_with_path(abstract_params)[0],
                                    jax.tree.leaves(param_shardings)):
    by_path[_path_keys(path)] = (leaf.shape, sharding)
  rep = replicated(mesh)

  def pick(path, leaf):
    keys = _path_keys(path)
    for start in range(len(keys)):
      hit = by_path.get(keys[start:])
      if hit is not None and hit[0] == getattr(leaf, "shape", None):
        return hit[1]
    return rep

  return jax.tree_util.tree_map_with_path(pick, abstract_tree)


def batch_sharding(mesh, ndim: int = 1) -> NamedSharding:
  axes = tuple(a for a in BATCH_AXES if a in mesh.axis_names)
  return NamedSharding(mesh, P(axes, *([None] * (ndim - 1))))


def batch_axis_size(mesh) -> int:
  return int(np.prod([mesh.shape[a] for a in BATCH_AXES if a in mesh.axis_names]))


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def process_batch_rows(mesh, global_batch_size: int) -> np.ndarray:
  """The rows of a global batch that this process feeds, in the order
  `global_batch` (jax.make_array_from_process_local_data) expects them in its local batch.

  make_array_from_process_local_data lays the local batch out as the distinct row
  slices of this process's addressable devices, sorted by their first row and
  concatenated; processes whose devices hold the same rows (replicas) feed the same rows.
  """
  sharding = batch_sharding(mesh, 1)
  slices = {(s[0].start or 0, s[0].stop if s[0].stop is not None else global_batch_size)
            for s in sharding.addressable_devices_indices_map((global_batch_size,)).values()}
  return np.concatenate([np.arange(a, b) for a, b in sorted(slices)])


def global_batch(local: Dict[str, np.ndarray], mesh) -> Dict[str, jax.Array]:
  """Host-local numpy batch -> global jax.Arrays sharded over the batch axes."""
  return {k: jax.make_array_from_process_local_data(batch_sharding(mesh, v.ndim), v)
          for k, v in local.items()}
