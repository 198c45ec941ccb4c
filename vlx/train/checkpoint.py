"""orbax checkpoints: train state + data-iterator state, async, atomic, keep-N.

`resume` (continue a run from the workdir) and `init_from` (load weights only,
fresh optimizer and step) are kept apart, as big_vision does.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import re
import sys
import tempfile
import time
from typing import Any, Dict, List, Mapping, Optional, Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils


def _gather_json(obj) -> List[Any]:
  """Every process's JSON-able object, on every process (each host has its own data state)."""
  if jax.process_count() == 1:
    return [obj]
  data = np.frombuffer(json.dumps(obj).encode(), np.uint8)
  sizes = np.asarray(multihost_utils.process_allgather(np.array([data.size], np.int32)))
  sizes = sizes.reshape(-1)
  padded = np.zeros(int(sizes.max()), np.uint8)
  padded[:data.size] = data
  everyone = np.asarray(multihost_utils.process_allgather(padded))
  return [json.loads(bytes(everyone[i, :int(sizes[i])])) for i in range(len(sizes))]


class CheckpointError(ValueError):
  """No checkpoint in the workdir restores (or the one asked for is not there)."""


def _first_line(e: BaseException) -> str:
  text = str(e).strip().splitlines()
  return f"{type(e).__name__}: {text[0][:300] if text else ''}"


@contextlib.contextmanager
def _stderr_captured():
  """File descriptor 2 into a temporary file for the block; yields the file's path.

  Why: when one read of a damaged checkpoint fails, orbax closes its event loop while
  tensorstore still completes the other reads, and their callbacks and abandoned coroutines
  print a traceback each (hundreds, thousands of lines) from threads that no Python hook
  sees. Captured at the file descriptor, they become one warning line naming a file."""
  sys.stderr.flush()
  fd, path = tempfile.mkstemp(prefix="vlx_restore_", suffix=".log")
  saved = os.dup(2)
  try:
    os.dup2(fd, 2)
    yield path
  except BaseException:
    # Interrupted (Ctrl-C, a kill turned into SystemExit, a bug): what was printed is
    # shown as it was, not left in a file nobody is told about.
    _restore_fd(saved, fd)
    _pass_through(path)
    raise
  _restore_fd(saved, fd)


def _restore_fd(saved: int, fd: int) -> None:
  sys.stderr.flush()
  os.dup2(saved, 2)
  os.close(saved)
  os.close(fd)


def _pass_through(path: str) -> None:
  with open(path, errors="replace") as f:
    sys.stderr.write(f.read())
  sys.stderr.flush()
  os.remove(path)


def _settle(path: str, quiet_s: float = 0.4, most_s: float = 5.0) -> None:
  """Waits (at most `most_s`) until `path` has not grown for `quiet_s`, collecting garbage:
  the reads still in flight after a failed restore finish and print from tensorstore's
  threads, and the coroutines they abandon print when collected; both belong inside the
  capture, not in the middle of the next compile's log."""
  start = last_change = time.monotonic()
  size = -1
  while time.monotonic() - start < most_s:
    gc.collect()
    now_size = os.path.getsize(path)
    if now_size != size:
      size, last_change = now_size, time.monotonic()
    elif time.monotonic() - last_change >= quiet_s:
      return
    time.sleep(0.1)


def _report_restore_noise(path: str, failed, step_dirs: List[str]) -> None:
  """After a restore: with no failure, what was printed goes to stderr as it was; after one,
  a warning per damaged step and one naming the file that keeps the reads' tracebacks."""
  with open(path, errors="replace") as f:
    text = f.read()
  if not failed or not text:
    _pass_through(path)
  for (_, error), step_dir in zip(failed, step_dirs):
    logging.warning("checkpoint %s does not restore (%s)", step_dir, error)
  if failed and text:
    logging.warning("the failed reads printed %d lines (tracebacks from tensorstore's "
                    "threads), kept in %s", text.count("\n"), path)


class Checkpointer:
  """Keeps `keep` checkpoints, and never fewer than two: the newest one is unverified until
  the next update has computed a finite loss from its parameters (see trainer.py, "Loop"),
  so the one before it must survive to be resumed from if that update diverges.

  `cleanup_tmp`: remove the `<step>.orbax-checkpoint-tmp-*` directories a kill during a save
  leaves behind (only the run that writes checkpoints may do this, never a reader such as
  mode=eval, which could otherwise delete a save in progress)."""

  def __init__(self, directory: str, keep: int = 3, async_save: bool = True,
               cleanup_tmp: bool = False):
    self.directory = os.path.abspath(directory)
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max(int(keep), 2), create=True,
                                             enable_async_checkpointing=async_save,
                                             cleanup_tmp_directories=cleanup_tmp))

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def all_steps(self) -> List[int]:
    return sorted(self.manager.all_steps())

  def step_dir(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def save(self, step: int, state, data_state: dict):
    per_process = {"per_process": _gather_json(data_state)}
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(per_process)), force=True)

  def restore(self, abstract_state, step: Optional[int] = None) -> Tuple[Any, dict, int,
                                                                         List[int]]:
    """(state, this process's data state, restored step, newer steps that did not restore).

    `step=None`: the newest checkpoint that restores; a damaged one (a truncated or missing
    file) is skipped with a warning naming it. `step=N`: exactly checkpoint N."""
    steps = self.all_steps()
    if step is not None:
      if step not in steps:
        raise CheckpointError(f"resume_step={step}: no checkpoint {step} in {self.directory} "
                              f"(there: {', '.join(map(str, steps)) or 'none'})")
      candidates = [step]
    else:
      candidates = steps[::-1]
    failed = []
    restored = None
    with _stderr_captured() as noise_path:
      for s in candidates:
        try:
          restored = self.manager.restore(s, args=ocp.args.Composite(
              state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
          break
        except Exception as e:  # pylint: disable=broad-except
          # Any failure to read a finished step dir (tensorstore, JSON, missing files) means
          # that checkpoint is unusable; an older intact one is the right place to resume.
          # Only its first line is kept: the exception's traceback holds orbax's frames and
          # their pending reads, which must be collectable inside the capture (_settle).
          failed.append((s, _first_line(e)))
          del e
      if failed:
        _settle(noise_path)
    _report_restore_noise(noise_path, failed, [self.step_dir(f) for f, _ in failed])
    if restored is not None:
      s = candidates[len(failed)]
      if failed:
        logging.warning("resuming from checkpoint %d instead of the damaged %s", s,
                        ", ".join(self.step_dir(f) for f, _ in failed))
      logging.info("resumed from %s step %d", self.directory, s)
      data = restored["data"]["per_process"]
      if len(data) != jax.process_count():
        raise ValueError(f"checkpoint {s} was written by {len(data)} processes, this run has "
                         f"{jax.process_count()}: the data iterators cannot be resumed exactly")
      return restored["state"], data[jax.process_index()], s, [f for f, _ in failed]
    newest, error = failed[0]
    raise CheckpointError(
        f"no checkpoint in {self.directory} restores (tried {', '.join(str(f) for f, _ in failed)}"
        f"; step {newest}: {error}): move the damaged step directories away, or "
        "use a new workdir")

  def set_aside(self, steps: List[int], why: str) -> None:
    """Moves step dirs out of the manager's sight, into `<workdir>/checkpoints_set_aside/`,
    so a resumed run can write those steps again; nothing is deleted."""
    if not steps:
      return
    if jax.process_index() == 0:
      dest_root = os.path.join(os.path.dirname(self.directory), "checkpoints_set_aside")
      os.makedirs(dest_root, exist_ok=True)
      for s in steps:
        dest = os.path.join(dest_root, f"{s}-{why}")
        n = 1
        while os.path.exists(dest):
          dest, n = os.path.join(dest_root, f"{s}-{why}.{n}"), n + 1
        os.rename(self.step_dir(s), dest)
        logging.warning("moved checkpoint %s (%s) to %s", self.step_dir(s), why, dest)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices("vlx_checkpoints_set_aside")
    self.manager.reload()

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()


def load_params(path: str, abstract_params, fresh=None, mapping: Optional[Dict[str, str]] = None,
                fresh_regex: str = ""):
  """Weights only, sharded as asked: from a checkpoint manager's directory (latest step), or a
  workdir / converted directory (`python -m vlx.convert`) that holds one as `checkpoints/`.

  Only some top-level subtrees, the others from `fresh` (the model's initialisation):
  `mapping` {dst: src} (config.init_map) takes each dst from the checkpoint's src, shaped and
  sharded like dst (a VideoMAE `video` encoder starting a video-text `video_tower`; dst may be
  a path, `video_tower/img`: an image model's tower inside a video model's); without
  one, a converted directory whose vlx_pretrained.json lists `param_subtrees` (an import of a
  pretrained encoder's stack and pooler only) gives those, under their own names."""
  path = os.path.abspath(path)
  meta = os.path.join(path, "vlx_pretrained.json")
  held = None
  if os.path.exists(meta):
    with open(meta, encoding="utf-8") as f:
      held = json.load(f).get("param_subtrees")
  if os.path.isdir(os.path.join(path, "checkpoints")):
    path = os.path.join(path, "checkpoints")
  if mapping is None and held is not None:
    missing = sorted(set(held) - set(abstract_params))
    if missing or fresh is None:
      raise ValueError(f"init_from={path}: holds params {held} of a model with "
                       f"{sorted(abstract_params)}" + ("" if missing else "; the rest needs an "
                                                      "initialisation (fresh=)"))
    mapping = {k: k for k in held}
  if mapping is not None:
    nested = [(a, b) for a in mapping for b in mapping if b.startswith(a + "/")]
    if nested:
      raise ValueError(f"init_map puts {nested[0][1]} inside {nested[0][0]}, which it also "
                       "maps: name one of them")
    unknown = sorted(d for d in mapping if _at(abstract_params, d) is None)
    if unknown or fresh is None:
      raise ValueError(f"init_map names {unknown}, which this model does not have; it has "
                       f"{sorted(abstract_params)}" if unknown else
                       "loading some params needs the rest's initialisation (fresh=)")
    held = _held_shapes(path)
    wanted, new_leaves = {}, []
    for dst, src in mapping.items():
      if src in wanted:
        raise ValueError(f"init_map takes {src} twice; each source subtree goes to one place")
      wanted[src], missing = _held_part(_at(abstract_params, dst), held, src, dst)
      new_leaves += missing
    allowed = re.compile(fresh_regex) if fresh_regex else None
    unexpected = [p for p in new_leaves if not (allowed and allowed.fullmatch(p))]
    if unexpected:
      raise ValueError(
          f"init_from={path}: the checkpoint lacks {len(unexpected)} param(s) the model has "
          f"under init_map, e.g. {unexpected[:3]} (another layout: scan vs unrolled, depth?); "
          f"params meant to start fresh there are named by config.init_fresh "
          f"(now {fresh_regex!r})")
    loaded = _restore(path, wanted)
    logging.info("init_from %s: %s loaded, the rest freshly initialised (%s at the top)%s",
                 path, mapping, sorted(set(abstract_params) - set(mapping)),
                 f"; new leaves inside them, freshly initialised: {new_leaves}" if new_leaves
                 else "")
    params = dict(fresh)
    for dst, src in mapping.items():
      params = _replaced_at(params, dst, _merged(_at(fresh, dst), loaded[src]))
    return params
  return _restore(path, abstract_params)


def _at(tree, dst: str):
  """The subtree at `dst` ('a' or 'a/b': a tower inside another model's module), or None."""
  for key in dst.split("/"):
    if not isinstance(tree, Mapping) or key not in tree:
      return None
    tree = tree[key]
  return tree


def _replaced_at(tree, dst: str, value):
  """`tree` with the subtree at `dst` replaced by `value` (copies along the path only)."""
  key, _, rest = dst.partition("/")
  return {**tree, key: _replaced_at(tree[key], rest, value) if rest else value}


def _leaf_paths(tree) -> Dict[Tuple[str, ...], Any]:
  flat = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: hasattr(x, "shape"))[0]
  return {tuple(str(getattr(k, "key", k)) for k in p): v for p, v in flat}


def _held_shapes(path: str) -> Optional[Dict[Tuple[str, ...], Tuple[int, ...]]]:
  """{param path: shape} of the latest checkpoint under `path`, from its metadata (None where
  the metadata cannot be read: then every leaf asked for must be there)."""
  mngr = ocp.CheckpointManager(path)
  step = mngr.latest_step()
  mngr.close()
  state = os.path.join(path, str(step), "state")
  if step is None or not os.path.isdir(state):
    return None
  quiet = logging.getLogger("absl")  # orbax warns that a metadata file it does not need is absent
  level = quiet.level
  quiet.setLevel(logging.ERROR)
  try:
    meta = ocp.PyTreeCheckpointer().metadata(state)
  except Exception:  # pylint: disable=broad-except
    return None
  finally:
    quiet.setLevel(level)
  tree = getattr(meta, "item_metadata", meta)
  tree = getattr(tree, "tree", tree)
  if not isinstance(tree, dict) or "params" not in tree:
    return None
  return {p: tuple(v.shape) for p, v in _leaf_paths(tree["params"]).items()}


def _held_part(abstract, held, src: str, dst: str):
  """The part of `abstract` (the model's subtree `dst`) that the checkpoint's subtree `src`
  holds, and the paths of the leaves it does not (a module the new model adds inside a
  loaded tower: an adapter in a pretrained image tower). A leaf held with another shape, or a
  subtree of which nothing is held, is an error naming it."""
  if held is None:
    return abstract, []
  if not isinstance(abstract, Mapping):  # a single array (`logit_scale`)
    shape = held.get((src,))
    if shape != tuple(abstract.shape):
      raise ValueError(f"init_map {dst}={src}: the checkpoint's {src} is "
                       f"{'absent' if shape is None else shape}, the model's {abstract.shape}")
    return abstract, []
  part, missing = {}, []
  for p, leaf in _leaf_paths(abstract).items():
    shape = held.get((src,) + p)
    if shape is None:
      missing.append("/".join((dst,) + p))
      continue
    if shape != tuple(leaf.shape):
      raise ValueError(f"init_map {dst}={src}: {'/'.join((src,) + p)} has shape {shape} in "
                       f"the checkpoint, the model's {'/'.join((dst,) + p)} {leaf.shape}")
    node = part
    for k in p[:-1]:
      node = node.setdefault(k, {})
    node[p[-1]] = leaf
  if not part:
    raise ValueError(f"init_map {dst}={src}: the checkpoint holds none of {dst}'s params "
                     f"under {src}")
  return part, missing


def _merged(fresh, loaded):
  """`fresh` with every leaf `loaded` holds replaced by the loaded one."""
  if not isinstance(fresh, Mapping):
    return loaded
  return {k: _merged(v, loaded[k]) if k in loaded else v for k, v in fresh.items()}


def _restore(path: str, abstract_params):
  """The params `abstract_params` names (a subset of the checkpoint's) of its latest step."""
  mngr = ocp.CheckpointManager(path)
  step = mngr.latest_step()
  if step is None:
    raise FileNotFoundError(f"init_from={path}: no checkpoint found there")
  restored = mngr.restore(step, args=ocp.args.Composite(
      state=ocp.args.PyTreeRestore(
          item={"params": abstract_params},
          restore_args=ocp.checkpoint_utils.construct_restore_args({"params": abstract_params}),
          partial_restore=True)))
  mngr.close()
  return restored["state"]["params"]
