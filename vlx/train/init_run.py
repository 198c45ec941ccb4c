"""A run that starts from another config's trained run (`config.init_from_run`): the video
transfer paradigms start from an image model that nobody has to train by hand.

`ensure` trains the named config first, unless a finished run of the same config is there
already, in `<workdir's parent>/init_runs/<config slug>-<hash of its config>`: runs of several
paradigms in one directory share one image model, and a changed image config (another
dataset location, another size) gets its own. The run takes the keys the caller's
`init_from_run_inherits` lists from the caller's config (the dataset source, whose tokenizer
the text tower reads; the towers the caller overrides). Then `config.init_from` names it,
and the caller's `init_map` takes what it needs.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re

INIT_RUNS_DIR = "init_runs"


def _get(config, dotted: str):
  node = config
  for part in dotted.split("."):
    if part not in node:
      return None
    node = node[part]
  return node


def init_run_config(config):
  """The config of the run that `config.init_from_run` names, with the keys
  `config.init_from_run_inherits` lists taken from `config` (where both have them)."""
  from vlx import config_lib  # pylint: disable=g-import-not-at-top
  first = config_lib.load_config_file(config.init_from_run)
  for dotted in config.get("init_from_run_inherits", ()):
    value, parent, _, leaf = _get(config, dotted), *dotted.rpartition(".")
    target = _get(first, parent) if parent else first
    if value is None or target is None or leaf not in target:
      continue
    target[leaf] = value.copy_and_resolve_references() if hasattr(
        value, "copy_and_resolve_references") else value
  return first


def init_run_dir(config, workdir: str) -> str:
  """Where the run `config.init_from_run` names lives: beside `workdir`, named by its config."""
  first = init_run_config(config)
  digest = hashlib.sha256(first.to_json(sort_keys=True).encode()).hexdigest()[:12]
  slug = re.sub(r"[^A-Za-z0-9]+", "_", os.path.basename(config.init_from_run)).strip("_")
  return os.path.join(os.path.dirname(os.path.abspath(workdir)), INIT_RUNS_DIR,
                      f"{slug}-{digest}")


def ensure(config, workdir: str) -> None:
  """With `init_from_run` set and `init_from` empty: train that run (a finished one is left as
  it is: the trainer resumes or returns) and point `init_from` at it."""
  if not config.get("init_from_run") or config.init_from:
    return
  from vlx.train import trainer  # pylint: disable=g-import-not-at-top
  first, where = init_run_config(config), init_run_dir(config, workdir)
  logging.info("init_from_run: %s starts this run; training it in %s (later runs reuse it)",
               config.init_from_run, where)
  trainer.train(first, where)
  config.init_from = where
