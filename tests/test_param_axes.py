"""Every parameter of every shipped config names its logical axes, and the shardings those
names give the largest variant of each family on a 2x2x2 mesh are recorded in
tests/golden/sharding_<config>.json, so a rule or model change that moves a tensor shows up
in review (as a failing test and a changed golden file), not on the first accelerator run.

Shapes only: params are built with jax.eval_shape (no FLOP, no weight in memory).
Regenerate the golden files after an intended change with
  VLX_UPDATE_GOLDEN=1 python -m pytest tests/test_param_axes.py
"""

import json
import os
import pathlib

import flax.linen as nn
import jax
import pytest

from vlx import build, config_lib
from vlx.parallel import mesh as mesh_lib
from vlx_testlib import REPO, mesh_of, shapes_data_dir  # noqa: F401  (fixture)

CONFIGS = sorted(p.stem for p in (REPO / "configs").glob("*.py"))
GOLDEN_DIR = pathlib.Path(__file__).parent / "golden"
UPDATE = os.environ.get("VLX_UPDATE_GOLDEN") == "1"
NOT_BUILDABLE_HERE = ("smoke", "runlocal")  # same parameter names and axes as the size they shrink


def variant_words(name):
  """The variant words configs/<name>.py accepts: its refusal of an unknown word lists them."""
  module = config_lib.load_config_module(str(REPO / "configs" / f"{name}.py"))
  with pytest.raises(ValueError) as refusal:
    module.get_config("--no-such-variant")
  valid = getattr(refusal.value, "valid", None)
  assert valid, f"configs/{name}.py does not list its variant words when refusing one"
  # key=DIR words need an imported checkpoint on disk: their model is that checkpoint's.
  return [w for w in valid if w not in NOT_BUILDABLE_HERE and "=" not in w]


def sizes_and_flags(name):
  """(sizes, flag words) of configs/<name>.py: a size is a word that cannot join the default
  size (the first word) in one variant ('tiny,l14' is two sizes); a flag can ('tiny,blind')."""
  words = variant_words(name)
  module = config_lib.load_config_module(str(REPO / "configs" / f"{name}.py"))
  sizes, flags = [words[0]], []
  for w in words[1:]:
    try:
      module.get_config(f"{words[0]},{w}")
      flags.append(w)
    except ValueError:
      sizes.append(w)
  return sizes, flags


def variants(name):
  """Each size, and each flag word on the default size ('tiny,blind')."""
  sizes, flags = sizes_and_flags(name)
  return sizes + [f"{sizes[0]},{f}" for f in flags]


def load(spec, data_dir):
  config = config_lib.load_config_file(str(REPO / "configs" / spec))
  if config.data.get("name") in ("synthetic_shapes", "synthetic_video", "reasoning_video"):
    # The dummy batch of a config with more keys than image and text reads one example's
    # shapes from the data: the small variant has the same shapes as the default one.
    config = config_lib.apply_overrides(config, [("data.source.variant", "small"),
                                                 ("data.source.data_dir", data_dir)])
  return config


def boxed_params(config, mesh):
  model = build.build_model(config)
  rules = mesh_lib.rules_from_config(config.sharding)
  return build.abstract_params(config, model, mesh, rules), rules


def param_name(path):
  return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def unnamed_params(boxed, rules):
  """'path: why' for each parameter that is not logically partitioned with one entry per
  dimension, whose names are all None (never named; a scalar has none to give), or that uses a name the sharding rules
  do not know (flax replicates an unknown name silently: a typo would never shard)."""
  known = {name for name, _ in rules}
  bad = []
  leaves = jax.tree_util.tree_flatten_with_path(
      boxed, is_leaf=lambda x: isinstance(x, nn.meta.AxisMetadata))[0]
  for path, leaf in leaves:
    name = param_name(path)
    if not isinstance(leaf, nn.LogicallyPartitioned):
      bad.append(f"{name}: not logically partitioned ({type(leaf).__name__})")
    elif len(leaf.names) != leaf.value.ndim:
      bad.append(f"{name}: names {leaf.names} for shape {leaf.value.shape}")
    elif leaf.names and all(n is None for n in leaf.names):
      bad.append(f"{name}: no logical name on any dimension of {leaf.value.shape}")
    elif set(leaf.names) - known - {None}:
      bad.append(f"{name}: {sorted(set(leaf.names) - known - {None})} not in the sharding rules")
  return bad


ALL_VARIANTS = [(name, v) for name in CONFIGS for v in variants(name)]


@pytest.mark.parametrize("name,variant", ALL_VARIANTS, ids=[f"{n}:{v}" for n, v in ALL_VARIANTS])
def test_every_parameter_names_its_logical_axes(name, variant, shapes_data_dir):  # noqa: F811
  config = load(f"{name}.py:{variant}", shapes_data_dir)
  boxed, rules = boxed_params(config, mesh_of(2, 2, 2, 8))
  assert jax.tree.leaves(boxed), f"{name}:{variant} has no parameters"
  bad = unnamed_params(boxed, rules)
  assert not bad, f"{name}:{variant}: parameters without logical axis names:\n" + "\n".join(bad)


# ---- Golden shardings: each family's largest variant on a (data, fsdp, tensor) = 2x2x2 mesh


def largest_variant(name):
  """The last size the config lists (l14 for the accelerator families, tiny for fusion)."""
  return sizes_and_flags(name)[0][-1]


def sharding_table(config):
  """{param path: PartitionSpec as a list} on the 2x2x2 mesh (axes that do not divide a
  dimension dropped, as the trainer drops them)."""
  mesh = mesh_of(2, 2, 2, 8)
  boxed, rules = boxed_params(config, mesh)
  shardings = mesh_lib.logical_to_shardings(boxed, mesh, rules)
  flat = jax.tree_util.tree_flatten_with_path(shardings)[0]
  shapes = jax.tree.leaves(mesh_lib.unbox(boxed))
  return {param_name(path): {"shape": list(leaf.shape),
                             "spec": [list(a) if isinstance(a, tuple) else a for a in s.spec]}
          for (path, s), leaf in zip(flat, shapes)}


def describe_changes(golden, now):
  lines = []
  for path in sorted(set(golden) | set(now)):
    if path not in now:
      lines.append(f"  removed  {path}: {golden[path]}")
    elif path not in golden:
      lines.append(f"  added    {path}: {now[path]}")
    elif golden[path] != now[path]:
      lines.append(f"  moved    {path}: {golden[path]} -> {now[path]}")
  return lines


@pytest.mark.parametrize("name", CONFIGS)
def test_sharding_of_the_largest_variant_matches_the_golden_file(name, shapes_data_dir):  # noqa: F811
  spec = f"{name}.py:{largest_variant(name)}"
  now = sharding_table(load(spec, shapes_data_dir))
  path = GOLDEN_DIR / f"sharding_{name}.json"
  if UPDATE:
    GOLDEN_DIR.mkdir(exist_ok=True)
    path.write_text(json.dumps({"config": spec, "mesh": {"data": 2, "fsdp": 2, "tensor": 2},
                                "params": now}, indent=1, sort_keys=True) + "\n")
    return
  assert path.exists(), (f"no golden file {path.name}; write it with VLX_UPDATE_GOLDEN=1 "
                         "python -m pytest tests/test_param_axes.py")
  golden = json.loads(path.read_text())
  assert golden["config"] == spec, (golden["config"], spec)
  changes = describe_changes(golden["params"], now)
  assert not changes, (
      f"{spec} on a 2x2x2 (data, fsdp, tensor) mesh: {len(changes)} parameter(s) changed "
      f"sharding against {path.relative_to(REPO)}:\n" + "\n".join(changes) +
      "\nIf intended, regenerate with VLX_UPDATE_GOLDEN=1 python -m pytest "
      "tests/test_param_axes.py and commit the golden files.")
