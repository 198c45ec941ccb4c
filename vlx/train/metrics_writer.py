"""metrics.jsonl + TensorBoard + progress bar; only process 0 writes."""

from __future__ import annotations

import json
import os
from typing import Dict

import jax
import numpy as np


def _scalar(v):
  v = np.asarray(v)
  return v.item() if v.size == 1 else v.tolist()


class MetricsWriter:

  def __init__(self, workdir: str, resume_step: int = 0, filename: str = "metrics.jsonl",
               tensorboard: bool = True):
    self.enabled = jax.process_index() == 0
    self.path = os.path.join(workdir, filename)
    self.tb = None
    if not self.enabled:
      return
    # A resumed run rewrites history after its checkpoint: drop lines logged past it.
    if resume_step is not None and os.path.exists(self.path):
      with open(self.path) as f:
        lines = [l for l in f if l.strip() and json.loads(l).get("step", 0) <= resume_step]
      with open(self.path, "w") as f:
        f.writelines(lines)
    if not tensorboard:
      return
    try:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self.tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
    except ImportError:
      self.tb = None

  def write(self, step: int, metrics: Dict[str, object]):
    if not self.enabled:
      return
    row = {"step": int(step), **{k: _scalar(v) for k, v in metrics.items()}}
    with open(self.path, "a") as f:
      f.write(json.dumps(row) + "\n")
    if self.tb is not None:
      for k, v in row.items():
        if k != "step" and isinstance(v, (int, float)):
          self.tb.add_scalar(k, v, step)
      self.tb.flush()

  def close(self):
    if self.tb is not None:
      self.tb.close()


def read_metrics(workdir: str):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(l) for l in f if l.strip()]
