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


_MISSING = object()


def _get(config, dotted: str):
  node = config
  for part in dotted.split("."):
    if not hasattr(node, "keys") or part not in node:
      return _MISSING
    node = node[part]
  return node


def init_run_config(config):
  """The config of the run that `config.init_from_run` names, with the keys
  `config.init_from_run_inherits` lists taken from `config` (where both have them). An entry
  `key=other.key` sets the run's `key` from this config's `other.key` (a model that holds
  the run's tower deeper in its tree)."""
  from vlx import config_checks, config_lib  # pylint: disable=g-import-not-at-top
  first = config_lib.load_config_file(config.init_from_run)
  for entry in config.get("init_from_run_inherits", ()):
    dotted, _, source = entry.partition("=")  # `key`, or `its key=this config's key`
    value, parent, _, leaf = _get(config, source or dotted), *dotted.rpartition(".")
    target = _get(first, parent) if parent else first
    if value is _MISSING or target is _MISSING or leaf not in target:
      raise config_lib.ConfigError(
          f"init_from_run_inherits names {entry!r}, which this config or "
          f"{config.init_from_run} lacks")
    target[leaf] = value.copy_and_resolve_references() if hasattr(
        value, "copy_and_resolve_references") else value
  config_checks.check(first)
  return first


def init_run_dir(config, first, workdir: str) -> str:
  """Where `first`, the run `config.init_from_run` names, lives: beside `workdir`, named by
  its config."""
  digest = hashlib.sha256(first.to_json(sort_keys=True).encode()).hexdigest()[:12]
  slug = re.sub(r"[^A-Za-z0-9]+", "_", os.path.basename(config.init_from_run)).strip("_")
  parent = os.path.dirname(os.path.abspath(workdir))
  if os.path.basename(parent) == INIT_RUNS_DIR:  # a stage of a chain: its runs side by side
    parent = os.path.dirname(parent)
  return os.path.join(parent, INIT_RUNS_DIR, f"{slug}-{digest}")


def ensure(config, workdir: str, mode: str = "train") -> None:
  """With `init_from_run` set and `init_from` empty: point `init_from` at that run, and train
  it unless it is finished (the trainer resumes or returns). Not trained when evaluating or
  resuming: a run that holds a checkpoint starts from it, not from `init_from`."""
  if not config.get("init_from_run") or config.init_from:
    return
  first = init_run_config(config)
  config.init_from = where = init_run_dir(config, first, workdir)
  checkpoints = os.path.join(workdir, "checkpoints")
  if mode != "train" or (os.path.isdir(checkpoints) and os.listdir(checkpoints)):
    return
  if _finished(first, where):
    logging.info("init_from_run: %s starts this run from %s (finished: reused)",
                 config.init_from_run, where)
    return
  from vlx.train import trainer  # pylint: disable=g-import-not-at-top
  logging.info("init_from_run: %s starts this run; training it in %s (later runs reuse it)",
               config.init_from_run, where)
  ensure(first, where, mode)  # a chain of stages: that run may start from another's
  trainer.train(first, where)


def _finished(first, where: str) -> bool:
  """Whether `where` holds a checkpoint at `first.total_steps` or later (then nothing needs
  building or restoring: the trainer would only say the run is complete)."""
  checkpoints = os.path.join(where, "checkpoints")
  steps = [int(d) for d in os.listdir(checkpoints) if d.isdigit()] if os.path.isdir(
      checkpoints) else []
  return bool(steps) and max(steps) >= first.total_steps
