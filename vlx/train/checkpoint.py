"""orbax checkpoints: train state + data-iterator state, async, atomic, keep-N.

`resume` (continue a run from the workdir) and `init_from` (load weights only,
fresh optimizer and step) are kept apart, as big_vision does.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, List, Optional, Tuple

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


class Checkpointer:

  def __init__(self, directory: str, keep: int = 3, async_save: bool = True):
    self.directory = os.path.abspath(directory)
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=async_save))

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def save(self, step: int, state, data_state: dict):
    per_process = {"per_process": _gather_json(data_state)}
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(per_process)), force=True)

  def restore(self, abstract_state) -> Tuple[Any, dict]:
    step = self.manager.latest_step()
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
    logging.info("resumed from %s step %d", self.directory, step)
    data = restored["data"]["per_process"]
    if len(data) != jax.process_count():
      raise ValueError(f"checkpoint {step} was written by {len(data)} processes, this run has "
                       f"{jax.process_count()}: the data iterators cannot be resumed exactly")
    return restored["state"], data[jax.process_index()]

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()


def load_params(path: str, abstract_params):
  """Weights only, sharded as asked: from a checkpoint manager's directory (latest step), or a
  workdir / converted directory (`python -m vlx.convert`) that holds one as `checkpoints/`."""
  path = os.path.abspath(path)
  if os.path.isdir(os.path.join(path, "checkpoints")):
    path = os.path.join(path, "checkpoints")
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
