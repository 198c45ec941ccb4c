"""Questions, answers and referring expressions for the synthetic shape scenes.

Derived at read time from each record's object annotations (boxes, colours, shapes),
so the stored dataset needs no new version and every epoch can ask a different
question about the same image. Five question types, as the fusion-encoder issue asks:
existence, count, colour, shape and relative position. Every question has exactly one
correct answer from `ANSWERS`; `answer_scores` gives VQA-style soft targets (one
answer with score 1 here; VQA v2's ten human answers give fractional scores), which
vlx/evals/vqa_metrics.py scores predictions against.

A referring expression names one object uniquely ("the small red circle", "the
circle to the left of the large shape") and comes with its box and the scene's candidate
boxes, for grounding by box selection or regression.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np

from vlx import registry
from vlx.data import shapes_render as R

QUESTION_TYPES = ("exist", "count", "colour", "shape", "relation")
RELATIONS = ("left", "right", "above", "below")
ANSWERS = (("yes", "no") + tuple(R.COUNT_WORDS[n] for n in sorted(R.COUNT_WORDS))
           + R.COLOUR_NAMES + R.SHAPES + RELATIONS)
ANSWER_INDEX = {a: i for i, a in enumerate(ANSWERS)}


def scene_objects(record) -> List[Dict]:
  """The record's objects as dicts: colour, shape, size, centre (x, y) and box [y0,x0,y1,x1]."""
  n = int(record["num_objects"])
  boxes = np.asarray(record["boxes"], np.float32)
  out = []
  for i in range(n):
    y0, x0, y1, x1 = (float(v) for v in boxes[i])
    out.append(dict(colour=R.COLOUR_NAMES[int(record["object_colours"][i])],
                    shape=R.SHAPES[int(record["object_shapes"][i])],
                    size="large" if i == 0 else "small",
                    cx=(x0 + x1) / 2, cy=(y0 + y1) / 2, box=boxes[i].copy()))
  return out


def relation(obj, ref) -> str:
  """Where `obj` lies relative to `ref`: the dominant axis of the offset (image y grows down)."""
  dx, dy = obj["cx"] - ref["cx"], obj["cy"] - ref["cy"]
  if abs(dx) >= abs(dy):
    return "left" if dx < 0 else "right"
  return "above" if dy < 0 else "below"


def _unique(obj, objects, keys) -> bool:
  return sum(all(o[k] == obj[k] for k in keys) for o in objects) == 1


def unique_name(obj, objects) -> Optional[str]:
  """The shortest 'colour shape' / 'size colour shape' naming `obj` alone, or None."""
  for keys in (("colour", "shape"), ("size", "colour", "shape")):
    if _unique(obj, objects, keys):
      return " ".join(obj[k] for k in keys)
  return None


def ask(objects, qtype: str, rng: np.random.Generator) -> Tuple[str, str]:
  """One (question, answer) of type `qtype` about the scene."""
  if qtype == "exist":
    if rng.random() < 0.5:  # a present object: yes
      o = objects[int(rng.integers(len(objects)))]
      return f"is there a {o['colour']} {o['shape']}?", "yes"
    present = {(o["colour"], o["shape"]) for o in objects}
    while True:  # an absent combination: no (balanced yes/no)
      c, s = R.COLOUR_NAMES[int(rng.integers(len(R.COLOUR_NAMES)))], R.SHAPES[
          int(rng.integers(len(R.SHAPES)))]
      if (c, s) not in present:
        return f"is there a {c} {s}?", "no"
  if qtype == "count":
    return "how many shapes are there?", R.COUNT_WORDS[len(objects)]
  o = objects[int(rng.integers(len(objects)))]
  # The large object is the only one of its size, so the fallbacks below always name one object.
  if qtype == "colour":
    if _unique(o, objects, ("size", "shape")):
      name = f"{o['size']} {o['shape']}"
    else:  # two small objects of the same shape: ask about the large one
      o, name = objects[0], "large shape"
    return f"what colour is the {name}?", o["colour"]
  if qtype == "shape":
    if _unique(o, objects, ("size", "colour")):
      name = f"{o['size']} {o['colour']} object"
    else:  # two small objects of the same colour: ask about the large one
      o, name = objects[0], "large object"
    return f"what shape is the {name}?", o["shape"]
  if qtype == "relation":
    if len(objects) < 2:  # nothing to relate: fall back to a count question
      return ask(objects, "count", rng)
    o = objects[1 + int(rng.integers(len(objects) - 1))]
    name = unique_name(o, objects)
    if name is None:  # two identical small shapes: ask about the large one's colour instead
      return ask(objects, "colour", rng)
    return f"where is the {name} relative to the large shape?", relation(o, objects[0])
  raise ValueError(f"unknown question type {qtype!r}; known: {QUESTION_TYPES}")


_QUESTION_PREFIX = (("is there", "exist"), ("how many", "count"), ("what colour", "colour"),
                    ("what shape", "shape"), ("where is", "relation"))


def classify_question(question: str) -> str:
  """The type of a question that `ask` wrote (for per-type accuracy); "other" otherwise."""
  for prefix, qtype in _QUESTION_PREFIX:
    if question.startswith(prefix):
      return qtype
  return "other"


def answer_scores(answer: str) -> np.ndarray:
  """VQA soft target over `ANSWERS` (min(#humans who gave it / 3, 1); one answer here)."""
  scores = np.zeros(len(ANSWERS), np.float32)
  scores[ANSWER_INDEX[answer]] = 1.0
  return scores


def refer(objects, rng: np.random.Generator) -> Tuple[str, int]:
  """A referring expression for one object and that object's index."""
  i = int(rng.integers(len(objects)))
  o = objects[i]
  if i > 0 and rng.random() < 0.5:  # relational form about a distractor
    side = {"left": "to the left of", "right": "to the right of", "above": "above",
            "below": "below"}[relation(o, objects[0])]
    candidates = [j for j in range(1, len(objects))
                  if relation(objects[j], objects[0]) == relation(o, objects[0])]
    if len(candidates) == 1:
      return f"the {o['shape']} {side} the large shape", i
  name = unique_name(o, objects)
  if name is None:  # identical small twins: refer to the large shape, always unique
    i, name = 0, unique_name(objects[0], objects)
  return f"the {name}", i


def question_type(rng: np.random.Generator, types: Optional[Tuple[str, ...]] = None) -> str:
  types = types or QUESTION_TYPES
  return types[int(rng.integers(len(types)))]


# The text fields the pp ops below read (`text_field` on each op): the dataset's tokenizer is
# trained on them too when a config uses the op (`vlx.data.sources.task_text_fields`).
TEXT_FIELDS = ("questions", "expressions")


def scene_texts(record, field: str, rng: np.random.Generator) -> List[str]:
  """Text that the pp ops derive from one scene, as they tokenize it: a question of every
  type (`questions`) or two referring expressions (`expressions`)."""
  objects = scene_objects(record)
  if field == "questions":
    return [ask(objects, qtype, rng)[0].rstrip("?") for qtype in QUESTION_TYPES]
  if field == "expressions":
    return [refer(objects, rng)[0] for _ in range(2)]
  raise ValueError(f"unknown scene text field {field!r}; known: {TEXT_FIELDS}")


# ---- Preprocessing ops (after `decode`, which passes the annotations through) -------------

def _tokens(handle, text: str, max_len: int) -> np.ndarray:
  # '?' adds nothing to a question the words do not say: never tokenized, never learned.
  return handle.tokenizer.encode([text.rstrip("?")], max_len)[0]


@registry.PP_OPS.register("scene_vqa")
def scene_vqa_op(handle, max_len: int, types: Optional[Tuple[str, ...]] = None, num: int = 1):
  """A question about the scene: `question` (its tokens), `question_string`, `answer`
  (index into ANSWERS) and `answer_scores` (VQA soft targets). The caption (`text`) is left
  as it is, so one example can carry a caption, a question and an expression.
  The question is drawn with the pipeline's rng: a new one every epoch in training, a fixed
  one for a fixed rng and record order. `types`: one question type, a tuple of them, or None
  for all. `num` > 1 asks that many questions of the one image (each field gains a leading
  axis of `num`): more answers per image encoded, for the price of the cheap fusion pass."""
  types = QUESTION_TYPES if types is None else (types,) if isinstance(types, str) else tuple(types)
  if not types:
    raise ValueError(f"scene_vqa: no question types given; known: {QUESTION_TYPES}")
  unknown = set(types) - set(QUESTION_TYPES)
  if unknown:
    raise ValueError(f"scene_vqa: unknown question types {sorted(unknown)}; "
                     f"known: {QUESTION_TYPES}")
  if num < 1:
    raise ValueError(f"scene_vqa: num must be >= 1, got {num}")

  def fn(ex, rng):
    objects = scene_objects(ex)
    qas = [ask(objects, question_type(rng, types), rng) for _ in range(num)]
    fields = dict(question_string=[q for q, _ in qas],
                  question=np.stack([_tokens(handle, q, max_len) for q, _ in qas]),
                  answer=np.array([ANSWER_INDEX[a] for _, a in qas], np.int32),
                  answer_scores=np.stack([answer_scores(a) for _, a in qas]))
    if num == 1:
      fields = {k: v[0] for k, v in fields.items()}
    ex.update(fields)
    return ex
  return fn


scene_vqa_op.text_field = "questions"


@registry.PP_OPS.register("scene_refer")
def scene_refer_op(handle, max_len: int, jitter: float = 0.0):
  """A referring expression: `expression` (its tokens), `expression_string`, the candidate
  `boxes` [MAX_OBJECTS, 4] with `box_mask` and `box_labels` (each object's class, colour x
  shape, for masked-region classification; -1 where absent), the referred object's index
  `target` and `target_box`.
  `jitter` moves each candidate box edge by up to that fraction of the box size (training:
  annotations standing in for an imperfect detector); `target_box` stays the annotated box,
  the regression target and the reference for IoU."""
  if not 0.0 <= jitter < 0.5:
    raise ValueError(f"scene_refer: jitter must lie in [0, 0.5) (boxes would invert), got {jitter}")

  def fn(ex, rng):
    objects = scene_objects(ex)
    expr, i = refer(objects, rng)
    truth = np.array(ex["boxes"], np.float32)
    boxes = truth.copy()
    if jitter:
      size = np.concatenate([boxes[:, 2:] - boxes[:, :2]] * 2, axis=1)
      boxes = np.clip(boxes + rng.uniform(-jitter, jitter, boxes.shape) * size, 0, 1)
    mask = np.arange(len(boxes)) < len(objects)
    labels = np.where(mask, np.asarray(ex["object_colours"]) * len(R.SHAPES)
                      + np.asarray(ex["object_shapes"]), -1).astype(np.int32)
    ex.update(expression_string=expr, expression=_tokens(handle, expr, max_len),
              boxes=boxes * mask[:, None], box_mask=mask, box_labels=labels, target=np.int32(i),
              target_box=truth[i])
    return ex
  return fn


scene_refer_op.text_field = "expressions"


@registry.PP_OPS.register("scene_tags")
def scene_tags_op(handle, max_len: int):
  """OSCAR's object tags: `tags`, the tokens of every object's 'colour shape' (here from the
  annotations, standing in for a detector's labels)."""

  def fn(ex, rng):
    del rng
    words = " ".join(f"{o['colour']} {o['shape']}" for o in scene_objects(ex))
    ex["tags"] = _tokens(handle, words, max_len)
    return ex
  return fn
