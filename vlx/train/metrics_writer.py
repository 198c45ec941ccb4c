"""metrics.jsonl + TensorBoard + progress bar; only process 0 writes."""

from __future__ import annotations

import json
import logging
import os
from typing import Dict, List

import jax
import numpy as np


def _scalar(v):
  v = np.asarray(v)
  return v.item() if v.size == 1 else v.tolist()


def read_rows(path: str) -> List[dict]:
  """The rows of a metrics file. A cut-off last line (no newline: the writer was killed in
  the middle of it) is dropped with a warning; any other line that is not JSON is an error
  naming the file and line, since silently dropping it would lose history."""
  with open(path, encoding="utf-8") as f:
    lines = f.read().split("\n")
  # split leaves "" after a final newline; anything else there is a line cut off mid-write.
  cut_off = lines.pop()
  rows = []
  for number, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      rows.append(json.loads(line))
    except ValueError as e:
      raise ValueError(f"{path} line {number} is not a JSON row ({e}); fix or remove that "
                       "line") from None
  if cut_off.strip():
    logging.warning("%s: dropping a cut-off last line (%d characters, no newline): the run "
                    "was killed while writing it", path, len(cut_off))
  return rows


class MetricsWriter:

  def __init__(self, workdir: str, resume_step: int = 0, filename: str = "metrics.jsonl",
               tensorboard: bool = True):
    self.enabled = jax.process_index() == 0
    self.path = os.path.join(workdir, filename)
    self.tb = None
    if not self.enabled:
      return
    # A resumed run rewrites history after its checkpoint: drop lines logged past it (and a
    # line cut off by a kill). The file is rewritten only when something is dropped.
    if resume_step is not None and os.path.exists(self.path):
      rows = read_rows(self.path)
      kept = [r for r in rows if r.get("step", 0) <= resume_step]
      with open(self.path, encoding="utf-8") as f:
        unchanged = f.read() == "".join(json.dumps(r) + "\n" for r in rows)
      if len(kept) != len(rows) or not unchanged:
        self._rewrite(kept)
    if not tensorboard:
      return
    try:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self.tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
    except ImportError:
      self.tb = None

  def _rewrite(self, rows: List[dict]):
    """Replaces the file atomically: a kill mid-rewrite leaves the old file whole."""
    tmp = self.path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
      f.writelines(json.dumps(r) + "\n" for r in rows)
    os.replace(tmp, self.path)

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

  def replace(self, step: int, metrics: Dict[str, object]):
    """Writes a row for `step`, removing the earlier rows of that step that hold the same keys
    (a repeated evaluation replaces its results instead of duplicating them)."""
    if not self.enabled:
      return
    if os.path.exists(self.path):
      rows = read_rows(self.path)
      kept = [r for r in rows if not (r.get("step") == int(step) and set(metrics) & set(r))]
      if len(kept) != len(rows):
        self._rewrite(kept)
    self.write(step, metrics)

  def close(self):
    if self.tb is not None:
      self.tb.close()


def read_metrics(workdir: str):
  return read_rows(os.path.join(workdir, "metrics.jsonl"))
