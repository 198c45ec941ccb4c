"""VQA's soft-score accuracy, shared by every evaluator that answers questions.

A dataset gives each question a soft target over its answer vocabulary (`answer_scores`:
min(#humans who gave the answer / 3, 1) in VQA v2; one answer with score 1 in the
synthetic scenes); the metric is the mean target score of the predicted answers.
"""

from __future__ import annotations

import numpy as np


def vqa_accuracy(pred: np.ndarray, scores: np.ndarray) -> float:
  """Mean soft score of the predicted answers: the VQA v2 metric given `answer_scores`."""
  pred = np.asarray(pred)
  return float(np.mean(np.asarray(scores)[np.arange(len(pred)), pred]))


def accuracy_by_type(pred: np.ndarray, scores: np.ndarray, types) -> dict:
  """{'accuracy': overall, 'accuracy_<type>': per question type} (`types[i]`: question i's)."""
  pred, scores = np.asarray(pred), np.asarray(scores)
  out = {"accuracy": vqa_accuracy(pred, scores)}
  for qtype in sorted(set(types)):
    idx = [i for i, t in enumerate(types) if t == qtype]
    out[f"accuracy_{qtype}"] = vqa_accuracy(pred[idx], scores[idx])
  return out
