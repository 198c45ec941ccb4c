"""orbax checkpoints: train state + data-iterator state, async, atomic, keep-N.

`resume` (continue a run from the workdir) and `init_from` (load weights only,
fresh optimizer and step) are kept apart, as big_vision does.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Optional, Tuple

import orbax.checkpoint as ocp


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
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)), force=True)

  def restore(self, abstract_state) -> Tuple[Any, dict]:
    step = self.manager.latest_step()
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
    logging.info("resumed from %s step %d", self.directory, step)
    return restored["state"], restored["data"]

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()


def load_params(path: str, abstract_params):
  """Weights only, from a vlx checkpoint dir (latest step) or a step dir; sharded as asked."""
  path = os.path.abspath(path)
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
