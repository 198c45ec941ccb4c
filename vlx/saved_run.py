"""A finished vlx run's model and weights, read from its workdir (`config.json`, the latest
checkpoint): what `vlx.predict` captions with and `vlx.pretrained.load(workdir)` wraps. Its
own module, so that predict (which also answers prompts with `vlx.pretrained`'s imported
models) and pretrained both import it without importing each other."""

from __future__ import annotations

import json
import os


def load_model(workdir: str):
  """(config, model, mesh, params) of a run's latest checkpoint, from its `config.json`: the
  config that ran (vocabulary fitted), so an image-text model is built without reading the
  dataset. (A model whose batch has other keys takes their shapes from one example, and a
  legacy config.json, see `workdir.is_legacy`, is fitted to the dataset here.)"""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  from vlx import build  # pylint: disable=g-import-not-at-top
  from vlx.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  from vlx.train import checkpoint  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: is {workdir} a vlx workdir?")
  with open(path) as f:
    saved = json.load(f)
  config = ml_collections.ConfigDict(saved)
  from vlx.train import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  if workdir_lib.is_legacy(saved):
    from vlx.data import sources  # pylint: disable=g-import-not-at-top
    build.fit_vocab(config, sources.load_dataset(config.data))
  model = build.build_model(config)
  mesh = mesh_lib.make_mesh(config.mesh)
  rules = mesh_lib.rules_from_config(config.sharding)
  boxed = build.abstract_params(config, model, mesh, rules)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    shardings = mesh_lib.logical_to_shardings(boxed, mesh, rules)
  abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          mesh_lib.unbox(boxed), shardings)
  params = checkpoint.load_params(os.path.join(workdir, "checkpoints"), abstract)
  return config, model, mesh, params


def load_run(workdir: str):
  """(config, model, mesh, handle, params): `load_model` plus the run's dataset, whose
  tokenizer decodes captions and whose records `--split` reads."""
  from vlx.data import sources  # pylint: disable=g-import-not-at-top
  config, model, mesh, params = load_model(workdir)
  return config, model, mesh, sources.load_dataset(config.data), params
