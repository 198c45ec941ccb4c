"""Video QA and temporal grounding (vlx/families/video/qa.py, qa_evals.py, configs/video_qa.py):
the metrics on hand-computed cases, the span decoder and objective, and the smoke config
through vlx.main with both evaluators."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vlx.families.video import qa, qa_evals
from vlx_testlib import (REPO, checkpoint_steps, read_metrics,  # noqa: F401
                         shapes_data_dir, video_data_dir)

CONFIG = str(REPO / "configs" / "video_qa.py")


def test_temporal_iou_and_grounding_metrics_on_hand_cases():
  pred = np.array([[0, 4], [2, 6], [0, 8], [5, 6], [3, 5]])
  gt = np.array([[0, 4], [0, 4], [2, 6], [0, 4], [1, 6]])
  # identical 1; overlap 2 of 6; 4 of 8; disjoint 0; inside: 2 of 5
  iou = qa_evals.temporal_iou(pred, gt)
  np.testing.assert_allclose(iou, [1, 2 / 6, 0.5, 0, 0.4])
  got = qa_evals.grounding_metrics(pred, gt)
  assert got == pytest.approx({"r1_iou50": 2 / 5, "r1_iou70": 1 / 5,
                               "miou": (1 + 2 / 6 + 0.5 + 0 + 0.4) / 5})


def test_accuracy_overall_and_per_group():
  pred, target = np.array([1, 2, 3, 4, 5]), np.array([1, 2, 0, 4, 0])
  assert qa_evals.accuracy(pred, target) == 3 / 5
  got = qa_evals.grouped_accuracy(pred, target, ["a", "a", "b", "b", "b"])
  assert got == {"a/accuracy": 1.0, "b/accuracy": pytest.approx(1 / 3)}


def test_decode_spans_picks_the_best_sum_and_never_a_padded_frame():
  logits = np.array([[-1, 2, 3, -0.5, 1, -4, -4, -4],     # [1, 5): 2 + 3 - 0.5 + 1 = 5.5
                     [-1, -1, -1, -1, -1, -1, -1, 0.5],   # only the last frame
                     [-1, -1, -1, -1, -1, -1, -1, -1]])   # all negative: the least bad frame
  logits[2, 3] = -0.1
  decode = jax.jit(qa.decode_spans)
  got = np.asarray(decode(logits))
  assert got.tolist() == [[1, 5], [7, 8], [3, 4]]
  mask = np.ones((3, 8), bool)
  mask[0, 4:] = False          # frames 4..7 are padding: [1, 3) is the best real span
  mask[1, 7] = False
  got = np.asarray(decode(logits, mask))
  assert got[0].tolist() == [1, 3] and got[1, 1] <= 7


def test_span_objective_scores_a_perfect_prediction():
  fn = jax.jit(qa.video_span_objective())  # one program, not one per eager op
  span_mask = np.zeros((2, 8), bool)
  span_mask[0, 2:5] = True
  span_mask[1, :] = True
  good = jnp.where(span_mask, 20.0, -20.0)
  loss, metrics = fn({"span_logits": good}, {"span_mask": span_mask})
  assert float(metrics["r1_iou50"]) == 1.0 and float(loss) < 1e-3
  _, metrics = fn({"span_logits": -good}, {"span_mask": span_mask})
  assert float(metrics["r1_iou50"]) == 0.0


def test_smoke_config_trains_and_reports_qa_and_grounding(video_data_dir, tmp_path):
  """`tiny,smoke` through vlx.main (towers and fusion one layer deep): steps, checkpoints,
  every task's training loss, and both evaluators' metrics in range."""
  from vlx import main as vlx_main  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / "run"
  rc = vlx_main.main([f"--config={CONFIG}:tiny,smoke", f"--workdir={workdir}",
                      f"--config.data.source.data_dir={video_data_dir}",
                      "--config.model.video.depth=1", "--config.model.video.temporal_depth=1",
                      "--config.model.fusion_depth=1", "--config.model.text.depth=1"])
  assert rc in (0, None)
  rows = read_metrics(workdir)
  train = [r for r in rows if "train/loss" in r]
  assert [r["step"] for r in train] == [2, 4], rows
  losses = {k for r in train for k in r if k.count("/") == 2 and k.endswith("/loss")}
  assert {"train/video_choice/loss", "train/video_span/loss"} < losses and len(losses) == 3
  assert all(math.isfinite(r[k]) for r in train for k in losses), train
  assert checkpoint_steps(workdir) == [2, 4]
  final = {k: v for r in rows if r["step"] == 4 for k, v in r.items()}
  assert final["qa/num_videos"] == 32 and final["qa/num_questions"] == 96
  assert final["grounding/num_queries"] == 32
  for name in ("qa/open/accuracy", "qa/mc/accuracy", "qa/open/q0/accuracy",
               "qa/mc/temporal/accuracy", "qa/open/static/accuracy", "qa_shuffled/mc/accuracy",
               "grounding/r1_iou50", "grounding/r1_iou70", "grounding/miou",
               "grounding/whole_video/r1_iou50", "grounding/static/miou"):
    assert 0 <= final[name] <= 1, (name, sorted(final))
  assert final["grounding/r1_iou70"] <= final["grounding/r1_iou50"]
  # Static videos' span is the whole video: the whole-video baseline is exact there.
  assert final["grounding/whole_video/miou"] < 1
