"""Questions and referring expressions derived from the synthetic scenes are correct."""

import re

import numpy as np
import pytest

from vlx.data import scene_qa as Q
from vlx.data import shapes_render as R
from vlx.evals.vqa_metrics import vqa_accuracy
from vlx_testlib import shapes_data_dir, shapes_handle  # noqa: F401


def _scenes(n=200, seed=0):
  rng = np.random.default_rng(seed)
  for _ in range(n):
    yield Q.scene_objects(R.scene_example(rng, 64)), rng


def _named(phrase, objects):
  """The objects a question's noun phrase fits ('shape' and 'object' name any shape)."""
  words = [w for w in phrase.split() if w not in ("shape", "object")]
  return [o for o in objects if all(w in (o["size"], o["colour"], o["shape"]) for w in words)]


def test_answers_follow_from_the_annotations():
  seen = set()
  for objs, rng in _scenes():
    for qtype in Q.QUESTION_TYPES:
      q, a = Q.ask(objs, qtype, rng)
      assert a in Q.ANSWER_INDEX, (q, a)
      seen.add(a)
      if q.startswith("how many"):
        assert a == R.COUNT_WORDS[len(objs)]
      m = re.fullmatch(r"is there a (\w+) (\w+)\?", q)
      if m:
        present = any(o["colour"] == m[1] and o["shape"] == m[2] for o in objs)
        assert a == ("yes" if present else "no"), (q, a, objs)
      m = re.fullmatch(r"where is the ([\w ]+) relative to the large shape\?", q)
      if m:
        match = _named(m[1], objs)
        assert len(match) == 1 and match[0]["size"] == "small", (q, objs)
        assert a == Q.relation(match[0], objs[0])
        dx, dy = match[0]["cx"] - objs[0]["cx"], match[0]["cy"] - objs[0]["cy"]
        assert a in (("left", "right") if abs(dx) >= abs(dy) else ("above", "below"))
      m = re.fullmatch(r"what (colour|shape) is the ([\w ]+)\?", q)
      if m:
        match = _named(m[2], objs)
        assert len(match) == 1, (q, objs)
        assert a == match[0][m[1]], (q, a, objs)
  # Every answer family occurs (yes/no, counts, colours, shapes, relations).
  for family in (("yes", "no"), ("one", "two", "three"), R.COLOUR_NAMES, R.SHAPES, Q.RELATIONS):
    assert seen & set(family), family


def test_referring_expressions_name_exactly_one_object():
  for objs, rng in _scenes(seed=1):
    expr, i = Q.refer(objs, rng)
    m = re.fullmatch(r"the (\w+) (to the left of|to the right of|above|below) the large shape",
                     expr)
    if m:
      side = {"to the left of": "left", "to the right of": "right", "above": "above",
              "below": "below"}[m[2]]
      match = [j for j, o in enumerate(objs) if j > 0 and o["shape"] == m[1]
               and Q.relation(o, objs[0]) == side]
    else:
      words = expr.split()[1:]
      match = [j for j, o in enumerate(objs)
               if all(w in (o["size"], o["colour"], o["shape"]) for w in words)]
    assert match == [i], (expr, i, objs)
    assert np.all(objs[i]["box"][2:] > objs[i]["box"][:2])


def test_vqa_soft_score_accuracy():
  scores = np.stack([Q.answer_scores("yes"), Q.answer_scores("red")])
  scores[1, Q.ANSWER_INDEX["blue"]] = 0.3  # a VQA-style partial answer
  pred = np.array([Q.ANSWER_INDEX["yes"], Q.ANSWER_INDEX["blue"]])
  assert np.isclose(vqa_accuracy(pred, scores), (1.0 + 0.3) / 2)


def test_pp_ops_build_vqa_and_grounding_examples_from_records(shapes_handle):
  from vlx.data import pp_ops
  source = shapes_handle.split("test")
  vqa = pp_ops.parse("decode|value_range(-1,1)|scene_vqa(24)", shapes_handle)
  ref = pp_ops.parse("decode|scene_refer(16, 0.1)", shapes_handle)
  rng = np.random.default_rng(0)
  for i in range(20):
    record = source[i]
    ex = vqa(dict(record), rng)
    q = ex["question"]
    assert q.shape == (24,) and q.dtype == np.int32 and q[0] != 0
    # Nothing truncated. The caption-trained vocabulary has no 'j' (only the questions'
    # "object" uses one), which decodes as the unknown piece.
    decoded = shapes_handle.tokenizer.decode(q[None])[0].replace(" \u2047 ", "j")
    assert decoded == ex["question_string"].rstrip("?")
    if ex["question_string"].startswith("how many"):
      assert Q.ANSWERS[int(ex["answer"])] == R.COUNT_WORDS[int(record["num_objects"])]
    assert ex["answer_scores"][ex["answer"]] == 1.0 and ex["answer_scores"].sum() == 1.0
    ex = ref(dict(record), rng)
    n = int(record["num_objects"])
    assert ex["box_mask"].tolist() == [j < n for j in range(R.MAX_OBJECTS)]
    assert 0 <= ex["target"] < n
    assert np.all(ex["boxes"][n:] == 0)
    truth = np.asarray(record["boxes"])
    np.testing.assert_array_equal(ex["target_box"], truth[ex["target"]])
    size = np.concatenate([truth[:n, 2:] - truth[:n, :2]] * 2, axis=1)
    assert np.all(np.abs(ex["boxes"][:n] - truth[:n]) <= 0.1 * size + 1e-6)
    assert np.any(ex["boxes"][:n] != truth[:n])  # jittered
    assert shapes_handle.tokenizer.decode(ex["expression"][None])[0] == ex["expression_string"]
    classes = [int(record["object_colours"][j]) * len(R.SHAPES) + int(record["object_shapes"][j])
               for j in range(n)]
    assert ex["box_labels"].tolist() == classes + [-1] * (R.MAX_OBJECTS - n)
  with pytest.raises(ValueError, match="unknown question types"):
    pp_ops.parse("decode|scene_vqa(16, ('colour', 'size'))", shapes_handle)
  only_counts = pp_ops.parse("decode|scene_vqa(16, 'count')", shapes_handle)
  assert only_counts(dict(source[0]), rng)["question_string"] == "how many shapes are there?"
  tags = pp_ops.parse("decode|scene_tags(12)", shapes_handle)(dict(source[0]), rng)["tags"]
  objects = Q.scene_objects(source[0])
  assert shapes_handle.tokenizer.decode(tags[None])[0] == " ".join(
      f"{o['colour']} {o['shape']}" for o in objects)
