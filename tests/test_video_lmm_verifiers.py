"""The reasoning videos (vlx/families/video_lmm/reasoning_videos.py) say what their pixels
show, and the verifiers (verifiers.py) pay only a well-formed, well-typed, right answer."""

import numpy as np
import pytest

from vlx import registry
from vlx.data import video_render as V
from vlx.families.video_lmm import reasoning_videos as RV
from vlx.families.video_lmm import verifiers as VF

SEEDS = range(12)


def _colour_mask(frame, colour):
  """Pixels within reach of a named colour (the renderer adds noise of ~10 per channel)."""
  ref = np.array(V.COLOURS[colour], np.float32)
  return np.abs(frame.astype(np.float32) - ref).max(-1) < 40


def _visible_frames(ex, colour):
  return [t for t in range(ex.num_frames) if _colour_mask(ex.frames[t], colour).sum() >= 4]


@pytest.mark.parametrize("kind", RV.KINDS)
def test_program_answers_earn_full_reward(kind):
  for seed in SEEDS:
    ex = RV.make_example(seed, kind)
    assert ex.frames.shape == (8, 32, 32, 3) and ex.frames.dtype == np.uint8
    assert VF.accuracy(ex.cot_response(), ex) == 1.0
    assert VF.format_ok(ex.cot_response()) == 1.0
    assert VF.accuracy(ex.answer_response(), ex) == 1.0  # answer-only: right, not CoT format
    assert VF.format_ok(ex.answer_response()) == 0.0
    if kind == "span":
      assert VF.temporal_iou(ex.cot_response(), ex) == 1.0


def test_examples_are_deterministic_and_cover_every_answer():
  a, b = RV.examples(16, seed=3), RV.examples(16, seed=3)
  for x, y in zip(a, b):
    assert np.array_equal(x.frames, y.frames) and x.cot_response() == y.cot_response()
  assert not np.array_equal(a[0].frames, RV.examples(1, seed=4)[0].frames)
  answers = {k: {RV.make_example(s, k).answer for s in range(40)} for k in ("count",
                                                                          "direction")}
  assert answers["count"] == {"1", "2", "3"}
  assert answers["direction"] == set(RV.DIRECTIONS)
  with pytest.raises(ValueError, match="unknown question kind 'colour'"):
    RV.make_example(0, "colour")


@pytest.mark.parametrize("kind", ["count", "order", "span"])
def test_traces_state_the_frames_each_shape_is_visible_in(kind):
  for seed in SEEDS:
    ex = RV.make_example(seed, kind)
    stated = [part.strip() for part in ex.thought.split(".") if "frames" in part]
    assert stated
    for part in stated:
      name, frames = part.split(": frames ")
      first, last = (int(x) - 1 for x in frames.split("-"))
      assert _visible_frames(ex, name.split()[0]) == list(range(first, last + 1)), (seed, part)


def _seen_at(first: int, last: int, clip: int, frames: int):
  """Frames of R that fall in [first - 0.5, last + 0.5) of the clip's frames."""
  return [j for j in range(frames)
          if first - 0.5 <= (j + 0.5) * clip / frames - 0.5 < last + 0.5]


@pytest.mark.parametrize("frames", [4, 16, 32])
def test_a_clip_read_at_other_frame_counts_shows_the_same_scene(frames):
  """More frames at test time: the same question, answer and trace; each named shape seen in
  the frames whose time falls in its span of the clip; a moving shape passes through more
  positions, in the answer's direction."""
  for seed in range(6):
    for kind in ("count", "order", "span"):
      base, ex = RV.make_example(seed, kind), RV.make_example(seed, kind, render_frames=frames)
      assert ex.frames.shape == (frames, 32, 32, 3) and ex.num_frames == 8
      assert (ex.question, ex.answer, ex.thought) == (base.question, base.answer, base.thought)
      for part in (p.strip() for p in base.thought.split(".") if "frames" in p):
        name, span = part.split(": frames ")
        first, last = (int(x) - 1 for x in span.split("-"))
        seen = [t for t in range(frames)
                if _colour_mask(ex.frames[t], name.split()[0]).sum() >= 4]
        assert seen == _seen_at(first, last, 8, frames), (seed, kind, part)
    ex = RV.make_example(seed, "direction", render_frames=frames)
    assert np.array_equal(RV.make_example(seed, "direction", render_frames=8).frames,
                          RV.make_example(seed, "direction").frames)
    colour = ex.question.split("the ")[1].split()[0]
    seen = [t for t in range(frames) if _colour_mask(ex.frames[t], colour).sum() >= 4]
    if frames > 8:
      assert len(seen) > len(_visible_frames(RV.make_example(seed, "direction"), colour))
    centres = np.array([np.argwhere(_colour_mask(ex.frames[t], colour)).mean(0)
                        for t in seen])
    if len(seen) == 1:  # 4 frames over a 3-frame motion may catch it once: no direction
      assert frames < 8
      continue
    axis, sign = {"right": (1, 1), "left": (1, -1), "down": (0, 1), "up": (0, -1)}[ex.answer]
    assert sign * (centres[-1, axis] - centres[0, axis]) > 8, (seed, ex.answer)
  with pytest.raises(ValueError, match="render_frames"):
    RV.make_example(0, "span", render_frames=0)


def test_direction_traces_match_the_motion():
  for seed in SEEDS:
    ex = RV.make_example(seed, "direction")
    colour = ex.question.split("the ")[1].split()[0]
    seen = _visible_frames(ex, colour)
    centres = [np.argwhere(_colour_mask(ex.frames[t], colour)).mean(0) for t in seen]
    dy, dx = centres[-1] - centres[0]
    want = {"right": dx > 8, "left": dx < -8, "down": dy > 8, "up": dy < -8}
    assert want[ex.answer], (seed, ex.answer, dx, dy)
    assert f"frame {seen[0] + 1}," in ex.thought and f"frame {seen[-1] + 1}." in ex.thought


@pytest.mark.parametrize("response", [
    "<think>two shapes</think><answer></answer>",                  # empty answer
    "<think>two shapes</think><answer>  </answer>",                # blank answer
    "<think>two shapes</think> 2",                                 # answer outside the tags
    "2 <think>two shapes</think><answer>2</answer>",               # text before
    "<think>x</think><answer>2</answer> trailing",                 # text after
    "<think>x</think><answer>2</answer><answer>2</answer>",        # several answer blocks
    "<answer>2</answer><think>x</think><answer>2</answer>",
    "<answer>2</answer><think>x</think>",                          # answer before the thought
    "<think>a</think><think>b</think><answer>2</answer>",          # several thoughts
    "<think>x<answer>2</answer></think>",                          # answer inside the thought
    "<think>x</think><answer>two or three</answer>",               # not a number
    "<think>x</think><answer>red</answer>",                        # wrong type
    "2",
    "",
])
def test_verifiers_reject_malformed_or_mistyped_answers(response):
  ex = next(e for e in (RV.make_example(s, "count") for s in range(50)) if e.answer == "2")
  assert VF.accuracy(response, ex) == 0.0


def test_typed_answers_per_kind():
  order = RV.make_example(0, "order")
  wrong = next(o for o in order.options if o != order.answer)
  assert VF.accuracy(f"<answer>{wrong}</answer>", order) == 0.0
  assert VF.accuracy(f"<answer>{order.answer.upper()}</answer>", order) == 1.0
  assert VF.typed_answer_ok(wrong, order)
  assert not VF.typed_answer_ok("purple hexagon", order)
  assert not VF.typed_answer_ok("left", order)
  direction = RV.make_example(0, "direction")
  other = next(d for d in RV.DIRECTIONS if d != direction.answer)
  assert VF.accuracy(f"<answer>{other}</answer>", direction) == 0.0
  assert VF.accuracy("<answer>3</answer>", direction) == 0.0
  count = next(e for e in (RV.make_example(s, "count") for s in range(50)) if e.answer == "2")
  assert VF.accuracy("<think>x</think><answer>two</answer>", count) == 1.0
  span = RV.make_example(0, "span")
  assert VF.accuracy("<answer>right</answer>", span) == 0.0
  assert VF.temporal_iou("<answer>0-3</answer>", span) == 0.0   # frame 0 does not exist
  assert VF.temporal_iou("<answer>5-2</answer>", span) == 0.0   # reversed
  assert VF.temporal_iou("<answer>1-9</answer>", span) == 0.0   # past the last frame


def test_span_iou_and_partial_credit():
  assert VF.span_iou((2, 5), (2, 5)) == 1.0
  assert VF.span_iou((0, 1), (4, 5)) == 0.0
  assert VF.span_iou((0, 3), (2, 5)) == pytest.approx(2 / 6)
  ex = next(e for e in (RV.make_example(s, "span") for s in range(50))
            if e.span[1] - e.span[0] >= 3)
  a, b = ex.span
  half = f"<answer>{a + 1}-{a + 1 + (b - a) // 2}</answer>"
  iou = VF.temporal_iou(half, ex)
  assert 0 < iou < 1
  assert VF.accuracy(half, ex) == float(iou >= 0.5)


def test_rewards_are_registered_by_name():
  ex = RV.make_example(1, "span")
  for name in ("accuracy", "format", "temporal_iou"):
    assert registry.REWARDS.get(name)(ex.cot_response(), ex) == 1.0
  with pytest.raises(KeyError, match="unknown reward 'accurate'"):
    registry.REWARDS.get("accurate")


def test_t_grpo_bonus_pays_only_for_using_the_order():
  ordered = np.array([[1, 1, 0, 1], [1, 0, 0, 0], [1, 1, 1, 1]])
  shuffled = np.array([[0, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1]])
  bonus = VF.t_grpo_bonus(ordered, shuffled, alpha=0.3, mu=0.8)
  np.testing.assert_allclose(bonus, [[0.3, 0.3, 0, 0.3], [0, 0, 0, 0], [0.3, 0.3, 0.3, 0.3]])
