"""What a workdir may hold before a run touches it: a directory, and a `config.json` that the
new config can resume.

A resumed run must rebuild the same parameter shapes, optimizer-state structure and data order
as the run that wrote its checkpoints. So every config key must match the saved `config.json`
except those listed in `MAY_CHANGE_ON_RESUME`: the length of the run, the learning-rate knobs,
how often to log, evaluate and checkpoint, the evaluations, and where the data and devices are
(mesh, sharding: orbax reshards on restore). Nothing is written to the workdir until the check
has passed, so a refused rerun leaves `config.json` as the finished run wrote it.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Dict, List, Tuple

# A prefix matches the key itself and every key below it ("evals" matches "evals.x.type").
MAY_CHANGE_ON_RESUME = (
    "total_steps", "log_every", "eval_every", "checkpoint_every", "keep_checkpoints",
    "eval_batch_size", "evals", "resume_step", "init_from", "init_map", "init_fresh",
    "accum_steps", "mesh", "sharding", "distributed",
    "optimizer.lr", "optimizer.warmup_steps", "optimizer.end_lr_frac", "optimizer.schedule",
    "optimizer.weight_decay", "optimizer.b1", "optimizer.b2", "optimizer.eps", "imports",
    "data.num_threads", "data.prefetch", "data.source.data_dir", "data.test_split",
    "data.pp_eval")

CONFIG_FILE = "config.json"


def check_is_directory(workdir: str) -> None:
  """A workdir path that names a file is refused before anything else runs."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ValueError(f"workdir {workdir} is a file, not a directory: pass a directory "
                     "(it is created if missing)")


def _flatten(tree, prefix="") -> Dict[str, object]:
  if isinstance(tree, dict):
    out = {}
    for k, v in tree.items():
      out.update(_flatten(v, f"{prefix}{k}."))
    if not tree and prefix:
      out[prefix[:-1]] = {}
    return out
  return {prefix[:-1]: tree}


# Keys a config.json written by an earlier vlx lacks, which do not change what the run
# computes: that vlx chose the same behaviour without them (`task` was implied by the model
# before configs named it). Keys it holds that vlx no longer reads are the task's to name
# (its `retired_config_keys`).
ADDED_KEYS = ("task",)


def _may_change(key: str) -> bool:
  return any(key == p or key.startswith(p + ".") for p in MAY_CHANGE_ON_RESUME)


def config_differences(saved: dict, new: dict, retired=(),
                       added=None) -> List[Tuple[str, object, object]]:
  """(key, saved value, new value) for every key that must match to resume but does not
  (a key that only one side has counts as different: `<missing>`), leaving out the keys
  `retired` that an earlier vlx wrote and this one no longer reads. `added` maps keys a later
  vlx added to the value that does what the earlier vlx did without them: a saved config
  lacking such a key matches a new one that holds that value (and only that value)."""
  a, b = _flatten(saved), _flatten(new)
  for k in retired:
    a.pop(k, None)
  for k in ADDED_KEYS:
    if k not in a and k in b:
      a[k] = b[k]
  for k, old_behaviour in (added or {}).items():
    if k not in a and k in b:
      a[k] = old_behaviour
  missing = "<missing>"
  return [(k, a.get(k, missing), b.get(k, missing)) for k in sorted(set(a) | set(b))
          if not _may_change(k) and a.get(k, missing) != b.get(k, missing)]


def config_as_json(config) -> dict:
  """The config as `config.json` stores it (tuples become lists), for comparison."""
  return json.loads(config.to_json_best_effort())


def is_legacy(saved: dict) -> bool:
  """A config.json written before it held the config that ran (vlx before `imports`): its
  text vocabulary is the one given, not the one fitted to the dataset."""
  return "imports" not in saved


def check_resumable(workdir: str, config, given_config=None, retired=(), added=None) -> None:
  """Raises ValueError naming the keys that differ from the saved config.json (one line).

  `given_config`: the config before the dataset fitted it, which a legacy config.json
  (`is_legacy`) recorded instead of the fitted one. `retired`: keys an earlier vlx wrote
  that are no longer read; `added`: keys it did not write (see `config_differences`)."""
  path = os.path.join(workdir, CONFIG_FILE)
  try:
    with open(path, encoding="utf-8") as f:
      saved = json.load(f)
  except FileNotFoundError:
    logging.warning("%s holds checkpoints but no %s: resuming without a config check",
                    workdir, CONFIG_FILE)
    return
  except (OSError, ValueError) as e:
    raise ValueError(f"{path} is not readable JSON ({e}); it describes the checkpoints beside "
                     "it, so fix it or use a new workdir") from None
  if is_legacy(saved) and given_config is not None:
    config = given_config
  diffs = config_differences(saved, config_as_json(config), retired, added)
  if not diffs:
    return
  shown = "; ".join(f"{k}: {old!r} in the checkpoint, {new!r} now" for k, old, new in diffs[:6])
  more = f" (and {len(diffs) - 6} more)" if len(diffs) > 6 else ""
  raise ValueError(
      f"{workdir} holds checkpoints of a run with a different config: {shown}{more}. These "
      "keys shape the model, data or optimizer state and must match to resume; use a new "
      f"workdir (with --config.init_from={os.path.join(workdir, 'checkpoints')} to start from "
      "its weights)")


def config_text(config) -> str:
  """config.json's text: the config that ran, taken after the trainer fitted it to the
  dataset (the text vocabulary), so a model built from it matches the checkpoints."""
  return config.to_json_best_effort(indent=2)


def write_config(workdir: str, text: str) -> None:
  """config.json, replaced atomically (a kill mid-write leaves the old one whole)."""
  path = os.path.join(workdir, CONFIG_FILE)
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    f.write(text)
  os.replace(tmp, path)
