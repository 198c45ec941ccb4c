"""Synthetic videos whose captions need time (pure numpy, deterministic by seed).

Every *temporal* video comes with a twin made of exactly the same frames in another order
(time reversed, or event blocks swapped, or a colour sequence re-arranged) whose captions
say something else. A model that ignores frame order sees the same input for both, so it
scores 50% on the pair by construction; no per-frame statistic (speed, flash count, a
colour's share of the frames) tells the twins apart. Temporal concepts:

- `direction`: a shape moves left/right/up/down (twin: reversed);
- `order`: one shape appears, then another (twin: the two blocks swapped; the block lengths
  are drawn independently, so either order is as likely);
- `colour_changes`: a shape changes colour once, twice or three times (twin: the same frames
  in a pattern with another count, e.g. RRBB vs RBRB);
- `size`: a shape grows / shrinks; `enter_leave`: a shape enters / leaves the frame
  (twins: reversed).

The event happens in a window `[t0, t1)` of random position and length; the frames around it
show only the nuisance (background noise, small dull distractor shapes), which is what
temporal grounding is scored on. *Static* videos are the control: one to three large shapes
in every frame (colour, shape and count are visible in any single frame).

Nuisance in every frame: background level and noise, a position jitter drawn afresh for each
frame (so no motion continuity tells an original from its re-ordered twin), object sizes and
positions, and 0-3 small distractors in dull colours that no caption or question names.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from vlx.data import shapes_render as R

NUM_FRAMES = 8
IMAGE_SIZE = 32
NUM_CAPTIONS = 5
NUM_QUESTIONS = 3
NUM_CHOICES = 4
KINDS = ("temporal", "static")
TEMPORAL_CONCEPTS = ("direction", "order", "colour_changes", "size", "enter_leave")
CONCEPTS = TEMPORAL_CONCEPTS + ("scene",)
# Share of generation units (2 records each) that are a temporal pair rather than two static
# videos: 1/2 gives as many temporal videos as static ones.
PAIR_PROBABILITY = 0.5

COLOURS = R.COLOURS
COLOUR_NAMES = R.COLOUR_NAMES
SHAPES = R.SHAPES
# Distractors: dull colours far from every caption colour, so they never pass for an event.
DISTRACTOR_COLOURS = ((115, 115, 115), (125, 80, 45), (105, 110, 45), (45, 50, 110))

# Action classes of the temporal videos (`label`; -1 for `order` and static videos), phrased
# as the captions phrase them, for zero-shot video classification.
ACTIONS = ("moves to the right", "moves to the left", "moves down", "moves up", "grows",
           "shrinks", "enters the frame", "leaves the frame", "changes colour once",
           "changes colour twice", "changes colour three times")
TEMPLATES = ("a shape {}", "a video of a shape that {}", "the shape {}")

DIRECTIONS = ("right", "left", "down", "up")
_REVERSE = {"right": "left", "left": "right", "down": "up", "up": "down"}
_FROM_TO = {"right": ("left", "right"), "left": ("right", "left"), "down": ("top", "bottom"),
            "up": ("bottom", "top")}
_DIR_PHRASE = {"right": "to the right", "left": "to the left", "down": "down", "up": "up"}
SIDES = ("left", "right", "top", "bottom")
TIMES = {1: "once", 2: "twice", 3: "three times"}
COUNT_WORDS = {1: "one", 2: "two", 3: "three"}

# Open-ended answers (`answers` index into this).
ANSWERS = (("yes", "no", "one", "two", "three") + COLOUR_NAMES + SHAPES
           + ("left", "right", "up", "down", "top", "bottom", "grows", "shrinks", "enters",
              "leaves", "before", "after"))
ANSWER_INDEX = {a: i for i, a in enumerate(ANSWERS)}


@dataclasses.dataclass
class Video:
  """One rendered video with its text; `span_colours` (RGB of the object the span query names)
  and `facts` are for tests and tools, not stored."""
  frames: np.ndarray                 # uint8 [T, S, S, 3]
  kind: str
  concept: str
  captions: List[str]
  label: int
  qa: List[Tuple[str, str]]
  mc_question: str
  mc_choices: List[str]
  mc_answer: int
  span: Tuple[int, int]
  span_query: str
  span_colours: List[np.ndarray]
  facts: dict
  frame_captions: List[str]  # per frame: its named shapes and where each is (no time)

  def record(self, twin: int) -> dict:
    """The flat record of fixed-shape arrays that the TFDS builder stores."""
    return {
        "video": self.frames,
        "captions": np.array(self.captions, dtype=object),
        "kind": self.kind,
        "concept": self.concept,
        "twin": int(twin),
        "label": int(self.label),
        "questions": np.array([q for q, _ in self.qa], dtype=object),
        "answers": np.array([ANSWER_INDEX[a] for _, a in self.qa], np.int64),
        "mc_question": self.mc_question,
        "mc_choices": np.array(self.mc_choices, dtype=object),
        "mc_answer": int(self.mc_answer),
        "span": np.array(self.span, np.int64),
        "span_query": self.span_query,
        "frame_captions": np.array(self.frame_captions, dtype=object),
    }


# ---- Drawing -------------------------------------------------------------------------------

# One object in one frame: (shape, cx, cy, r, rgb).
Draw = Tuple[str, float, float, float, np.ndarray]


def _rgb(rng, name: str) -> np.ndarray:
  return np.clip(np.array(COLOURS[name], np.float32) + rng.normal(0, 10, 3), 0, 255)


def _pick(rng, seq):
  return seq[int(rng.integers(len(seq)))]


def _render(plan: Sequence[List[Draw]], size: int, rng) -> np.ndarray:
  """Frames from per-frame draw lists over a noisy background (the last draw is on top)."""
  yy, xx = np.mgrid[:size, :size].astype(np.float32) + 0.5
  background = rng.uniform(15, 60) + rng.uniform(-5, 5, 3)
  frames = np.empty((len(plan), size, size, 3), np.uint8)
  for t, draws in enumerate(plan):
    frame = background + rng.normal(0, 4, (size, size, 3)).astype(np.float32)
    for shape, cx, cy, r, rgb in draws:
      frame[R._mask(shape, xx, yy, cx, cy, r)] = rgb  # pylint: disable=protected-access
    frames[t] = np.clip(frame, 0, 255).astype(np.uint8)
  return frames


class _Scene:
  """The nuisance every frame shares: distractors and a fresh position jitter per frame."""

  def __init__(self, rng, size: int, num_frames: int):
    self.rng, self.size, self.num_frames = rng, size, num_frames
    self.plan: List[List[Draw]] = [[] for _ in range(num_frames)]
    # Per frame, the named objects as drawn: (colour name, shape, cx, cy) for frame captions.
    self.named: List[List[Tuple[str, str, float, float]]] = [[] for _ in range(num_frames)]
    for _ in range(int(rng.integers(4))):
      r = rng.uniform(0.05, 0.08) * size
      cx, cy = rng.uniform(r, size - r, 2)
      rgb = np.clip(np.array(_pick(rng, DISTRACTOR_COLOURS), np.float32)
                    + rng.normal(0, 6, 3), 0, 255)
      self.add(_pick(rng, SHAPES), rgb, range(num_frames), [cx] * num_frames,
               [cy] * num_frames, [r] * num_frames)

  def add(self, shape, rgb, frames, xs, ys, rs, colour: Optional[str] = None):
    """Draw `shape` in `frames`; `colour` (its name) makes it an object the frame captions
    name (distractors have none)."""
    jitter = self.size / 32
    for t, x, y, r in zip(frames, xs, ys, rs):
      dx, dy = self.rng.uniform(-jitter, jitter, 2)
      self.plan[t].append((shape, x + dx, y + dy, r, rgb))
      if colour is not None:
        self.named[t].append((colour, shape, x + dx, y + dy))

  def frame_captions(self) -> List[str]:
    return [frame_caption(objs, self.size) for objs in self.named]

  def render(self) -> np.ndarray:
    return _render(self.plan, self.size, self.rng)


def region(cx: float, cy: float, size: int) -> str:
  """Which of nine regions (thirds of the frame) holds the point, in the image captions'
  words (vlx/data/shapes_render.py)."""
  col, row = (min(2, max(0, int(3 * v / size))) for v in (cx, cy))
  return R.region_name(row, col)


def frame_caption(objects, size: int) -> str:
  """A still frame's caption: each named object and where it is ('a red circle in the top
  left'), or 'an empty frame' when no named shape is in it (distractors are never named). It
  says what one frame shows, never what happens over time:
  the text an image model of these frames is trained on (`still_caption`)."""
  if not objects:
    return "an empty frame"
  names = [f"a {c} {s} in the {region(x, y, size)}" for c, s, x, y in objects]
  return _articles(names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1])


def _window(rng, num_frames: int, min_len: int) -> Tuple[int, int]:
  """An event window of random length in [min_len, T - 1] and random position."""
  length = int(rng.integers(min_len, num_frames))
  t0 = int(rng.integers(num_frames - length + 1))
  return t0, t0 + length


def _radius(rng, size: int) -> float:
  return rng.uniform(0.15, 0.2) * size


# ---- Temporal concepts: each draws its event, the twin's frame order and both videos' facts ---
# A concept adds its objects to the scene and returns (perm, facts, twin_facts, colours): the
# twin's frames are frames[perm]; `colours` holds the RGB of the object(s) the grounding query
# names (what tests look for inside and outside the span).


def _reversed_window(window, num_frames):
  return num_frames - window[1], num_frames - window[0]


def _reversal(scene, window, facts, twin_facts):
  twin_facts["window"] = _reversed_window(window, scene.num_frames)
  return np.arange(scene.num_frames)[::-1].copy(), facts, twin_facts


def _direction(rng, scene, size):
  window = _window(rng, scene.num_frames, 3)
  direction = _pick(rng, DIRECTIONS)
  c, s, r = _pick(rng, COLOUR_NAMES), _pick(rng, SHAPES), _radius(rng, size)
  frames = range(*window)
  n = len(frames)
  start, end = rng.uniform(0.22, 0.32) * size, rng.uniform(0.68, 0.78) * size
  along = np.linspace(start, end, n)
  if direction in ("left", "up"):
    along = along[::-1]
  across = [rng.uniform(0.25, 0.75) * size] * n
  xs, ys = (along, across) if direction in ("right", "left") else (across, along)
  rgb = _rgb(rng, c)
  scene.add(s, rgb, frames, xs, ys, [r] * n, colour=c)
  facts = dict(concept="direction", colour=c, shape=s, direction=direction, window=window)
  twin = dict(facts, direction=_REVERSE[direction])
  return (*_reversal(scene, window, facts, twin), {"actor": rgb})


def _size(rng, scene, size):
  window = _window(rng, scene.num_frames, 3)
  grows = bool(rng.random() < 0.5)
  c, s = _pick(rng, COLOUR_NAMES), _pick(rng, SHAPES)
  frames = range(*window)
  n = len(frames)
  rs = np.linspace(rng.uniform(0.07, 0.1) * size, rng.uniform(0.2, 0.25) * size, n)
  if not grows:
    rs = rs[::-1]
  cx, cy = rng.uniform(0.3, 0.7, 2) * size
  rgb = _rgb(rng, c)
  scene.add(s, rgb, frames, [cx] * n, [cy] * n, rs, colour=c)
  facts = dict(concept="size", colour=c, shape=s, grows=grows, window=window)
  return (*_reversal(scene, window, facts, dict(facts, grows=not grows)), {"actor": rgb})


def _enter_leave(rng, scene, size):
  window = _window(rng, scene.num_frames, 3)
  enters, side = bool(rng.random() < 0.5), _pick(rng, SIDES)
  c, s, r = _pick(rng, COLOUR_NAMES), _pick(rng, SHAPES), _radius(rng, size)
  frames = range(*window)
  n = len(frames)
  # From partly outside the edge (centre within 0.3 r outside to 0.1 r inside) to the middle.
  edge = rng.uniform(-0.3, 0.1) * r
  inside = rng.uniform(0.45, 0.6) * size
  along = np.linspace(edge, inside, n)
  if side in ("right", "bottom"):
    along = size - along
  if not enters:
    along = along[::-1]
  across = [rng.uniform(0.25, 0.75) * size] * n
  xs, ys = (along, across) if side in ("left", "right") else (across, along)
  rgb = _rgb(rng, c)
  scene.add(s, rgb, frames, xs, ys, [r] * n, colour=c)
  facts = dict(concept="enter_leave", colour=c, shape=s, side=side, enters=enters,
               window=window)
  return (*_reversal(scene, window, facts, dict(facts, enters=not enters)), {"actor": rgb})


def _two_objects(rng):
  """Two objects of different colours (so 'what colour appears first' always needs time);
  their shapes may be the same."""
  c_a, c_b = (COLOUR_NAMES[int(i)] for i in rng.choice(len(COLOUR_NAMES), 2, replace=False))
  return (c_a, _pick(rng, SHAPES)), (c_b, _pick(rng, SHAPES))


def _order(rng, scene, size):
  """Object A alone for n_a frames, then B alone for n_b frames; the twin shows B's block first.
  n_a and n_b are drawn independently, so a block's length says nothing about its place."""
  longest = (scene.num_frames - 1) // 2
  n_a, n_b = (int(v) for v in rng.integers(1, longest + 1, 2))
  t0 = int(rng.integers(scene.num_frames - n_a - n_b + 1))
  objs = dict(zip("AB", _two_objects(rng)))
  rgbs = {}
  for key, start, n in (("A", t0, n_a), ("B", t0 + n_a, n_b)):
    c, s = objs[key]
    r = _radius(rng, size)
    cx, cy = rng.uniform(r, size - r, 2)
    rgbs[key] = _rgb(rng, c)
    scene.add(s, rgbs[key], range(start, start + n), [cx] * n, [cy] * n, [r] * n, colour=c)
  perm = np.arange(scene.num_frames)
  a, b = np.arange(t0, t0 + n_a), np.arange(t0 + n_a, t0 + n_a + n_b)
  perm[t0:t0 + n_a + n_b] = np.concatenate([b, a])
  query = _pick(rng, "AB")  # the event the grounding query names, the same for both twins
  windows = {"A": (t0, t0 + n_a), "B": (t0 + n_a, t0 + n_a + n_b)}
  twin_windows = {"B": (t0, t0 + n_b), "A": (t0 + n_b, t0 + n_a + n_b)}
  facts = dict(concept="order", objects=objs, first="A", windows=windows, query=query,
               window=windows[query])
  twin = dict(facts, first="B", windows=twin_windows, window=twin_windows[query])
  return perm, facts, twin, {"actor": rgbs[query]}


def _colour_pattern(rng, counts: Dict[str, int], changes: int, start: str) -> List[str]:
  """A colour per frame with `changes` changes, starting with `start`, using each colour
  exactly counts[colour] times (runs of random length)."""
  other = next(k for k in counts if k != start)
  runs = [start if i % 2 == 0 else other for i in range(changes + 1)]
  lengths = {}
  for key in counts:
    k = runs.count(key)  # split counts[key] frames into k positive runs at random
    cuts = np.sort(rng.choice(np.arange(1, counts[key]), k - 1, replace=False))
    lengths[key] = list(np.diff(np.concatenate([[0], cuts, [counts[key]]])))
  out = []
  for key in runs:
    out += [key] * int(lengths[key].pop(0))
  return out


def _runs(pattern: Sequence[str]) -> List[str]:
  return [k for i, k in enumerate(pattern) if i == 0 or pattern[i - 1] != k]


def _colour_changes(rng, scene, size):
  """One shape in colours X and Y: n_x and n_y frames (both >= 2, so any change count 1-3
  fits either start colour); the twin re-arranges the very same frames into another count."""
  window = _window(rng, scene.num_frames, 4)
  length = window[1] - window[0]
  n_x = int(rng.integers(2, length - 1))
  counts = {"X": n_x, "Y": length - n_x}
  names = dict(zip("XY", rng.choice(len(COLOUR_NAMES), 2, replace=False)))
  names = {k: COLOUR_NAMES[int(v)] for k, v in names.items()}
  changes, twin_changes = (int(v) for v in rng.choice([1, 2, 3], 2, replace=False))
  pattern = _colour_pattern(rng, counts, changes, _pick(rng, "XY"))
  twin_pattern = _colour_pattern(rng, counts, twin_changes, _pick(rng, "XY"))
  s, r = _pick(rng, SHAPES), _radius(rng, size)
  cx, cy = rng.uniform(r, size - r, 2)
  rgbs = {k: _rgb(rng, v) for k, v in names.items()}
  for t, key in zip(range(*window), pattern):
    scene.add(s, rgbs[key], [t], [cx], [cy], [r], colour=names[key])
  # The twin's slot for colour X takes the original's X frames in their order (same for Y).
  perm = np.arange(scene.num_frames)
  source = {k: [window[0] + i for i, p in enumerate(pattern) if p == k] for k in counts}
  for i, key in enumerate(twin_pattern):
    perm[window[0] + i] = source[key].pop(0)

  def facts_of(p):
    return dict(concept="colour_changes", shape=s, sequence=[names[k] for k in _runs(p)],
                window=window)
  return perm, facts_of(pattern), facts_of(twin_pattern), {"X": rgbs["X"], "Y": rgbs["Y"]}


_CONCEPT_FNS = {"direction": _direction, "order": _order, "colour_changes": _colour_changes,
                "size": _size, "enter_leave": _enter_leave}


# ---- Text: captions, questions, multiple choice and grounding queries from the facts ----------


def _name(obj) -> str:
  return f"{obj[0]} {obj[1]}"


def _articles(text: str) -> str:
  return re.sub(r"\ba (?=[aeiou])", "an ", text)


def captions(f) -> List[str]:
  """Five paraphrases; each says the temporal fact, so no caption fits both twins."""
  return [_articles(c) for c in _captions(f)]


def _captions(f) -> List[str]:
  concept = f["concept"]
  if concept == "direction":
    o, d = f"{f['colour']} {f['shape']}", f["direction"]
    fr, to = _FROM_TO[d]
    ph = _DIR_PHRASE[d]
    return [f"a {o} moves from the {fr} to the {to}", f"a {o} moves {ph}",
            f"a {o} moving {ph}", f"the {o} goes from the {fr} side to the {to} side",
            f"a video of a {o} travelling {ph}"]
  if concept == "size":
    o = f"{f['colour']} {f['shape']}"
    if f["grows"]:
      return [f"a {o} grows", f"a {o} getting bigger", f"the {o} grows from small to large",
              f"a video of a growing {o}", f"a {o} that expands"]
    return [f"a {o} shrinks", f"a {o} getting smaller", f"the {o} shrinks from large to small",
            f"a video of a shrinking {o}", f"a {o} that contracts"]
  if concept == "enter_leave":
    o, side = f"{f['colour']} {f['shape']}", f["side"]
    if f["enters"]:
      return [f"a {o} enters from the {side}", f"a {o} enters the frame",
              f"a {o} comes in from the {side}", f"a video of a {o} entering",
              f"a {o} moves into view from the {side}"]
    return [f"a {o} leaves to the {side}", f"a {o} leaves the frame",
            f"a {o} goes out on the {side}", f"a video of a {o} leaving",
            f"a {o} moves out of view on the {side}"]
  if concept == "order":
    first = _name(f["objects"][f["first"]])
    second = _name(f["objects"]["B" if f["first"] == "A" else "A"])
    return [f"a {first} appears, then a {second}", f"first a {first}, then a {second}",
            f"a {second} appears after a {first}", f"a {first} is followed by a {second}",
            f"a {first} appears before a {second}"]
  if concept == "colour_changes":
    s, seq = f["shape"], f["sequence"]
    times = TIMES[len(seq) - 1]
    pair = " and ".join(sorted(set(seq)))
    return [f"a {s} turns " + ", then ".join(seq), f"a {s} changes colour {times}",
            f"the {s} changes colour {times}, between {pair}",
            f"a {s} that starts {seq[0]} and changes colour {times}",
            f"a {s} switching colour {times}: " + ", ".join(seq)]
  if concept == "scene":
    objs = f["objects"]
    listing = _listing(objs)
    n = len(objs)
    word = "shape" if n == 1 else "shapes"
    return [listing, f"{COUNT_WORDS[n]} large {word}: {listing}", f"a video of {listing}",
            f"there {'is' if n == 1 else 'are'} {COUNT_WORDS[n]} large {word}: {listing}",
            f"a still video of {listing}"]
  raise ValueError(f"unknown concept {concept!r}; known: {CONCEPTS}")


def _listing(objs) -> str:
  names = [f"a {_name(o)}" for o in objs]
  return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def action_label(f) -> int:
  """The index into ACTIONS (-1: `order` and static videos have no action class)."""
  concept = f["concept"]
  if concept == "direction":
    return ACTIONS.index(f"moves {_DIR_PHRASE[f['direction']]}")
  if concept == "size":
    return ACTIONS.index("grows" if f["grows"] else "shrinks")
  if concept == "enter_leave":
    return ACTIONS.index("enters the frame" if f["enters"] else "leaves the frame")
  if concept == "colour_changes":
    return ACTIONS.index(f"changes colour {TIMES[len(f['sequence']) - 1]}")
  return -1


def questions(f, rng) -> List[Tuple[str, str]]:
  """NUM_QUESTIONS (question, answer) pairs; for a temporal video the first one needs time.
  Twins draw with rngs seeded alike, so they are asked the same questions."""
  return [(_articles(q), a) for q, a in _questions(f, rng)]


def _questions(f, rng) -> List[Tuple[str, str]]:
  concept = f["concept"]
  if concept in ("direction", "size", "enter_leave"):
    o = f"{f['colour']} {f['shape']}"
    ask = {"direction": (f"which way does the {o} move?", f.get("direction")),
           "size": (f"does the {o} grow or shrink?",
                    "grows" if f.get("grows") else "shrinks"),
           "enter_leave": (f"does the {o} enter or leave?",
                           "enters" if f.get("enters") else "leaves")}[concept]
    qa = [ask, (f"what colour is the {f['shape']}?", f["colour"]),
          (f"what shape is the {f['colour']} object?", f["shape"])]
    if concept == "enter_leave" and rng.random() < 0.5:
      qa[2] = (f"on which side does the {o} cross the edge?", f["side"])
    return qa
  if concept == "order":
    objs = f["objects"]
    x = _pick(rng, "AB")
    y = "B" if x == "A" else "A"
    second = "B" if f["first"] == "A" else "A"
    return [(f"does the {_name(objs[x])} appear before or after the {_name(objs[y])}?",
             "before" if f["first"] == x else "after"),
            ("what colour is the shape that appears first?", objs[f["first"]][0]),
            ("what shape appears last?", objs[second][1])]
  if concept == "colour_changes":
    s, seq = f["shape"], f["sequence"]
    return [(f"how many times does the {s} change colour?", COUNT_WORDS[len(seq) - 1]),
            (f"what colour is the {s} at the start?", seq[0]),
            (f"what colour is the {s} at the end?", seq[-1])]
  if concept == "scene":
    objs = f["objects"]
    qa = [("how many large shapes are there?", COUNT_WORDS[len(objs)])]
    o = _pick(rng, objs)
    if sum(p[1] == o[1] for p in objs) == 1:
      qa.append((f"what colour is the large {o[1]}?", o[0]))
    else:
      qa.append((f"what shape is the large {o[0]} object?", o[1]) if sum(
          p[0] == o[0] for p in objs) == 1 else (f"is there a {_name(o)}?", "yes"))
    if rng.random() < 0.5:
      qa.append((f"is there a {_name(_pick(rng, objs))}?", "yes"))
    else:
      absent = [(c, s) for c in COLOUR_NAMES for s in SHAPES if (c, s) not in objs]
      qa.append((f"is there a {_name(_pick(rng, absent))}?", "no"))
    return qa
  raise ValueError(f"unknown concept {concept!r}; known: {CONCEPTS}")


def foils(f, rng) -> List[str]:
  """Wrong descriptions for multiple choice, in the style of captions(f)[0]: the same event
  with another value (a direction off the axis, another colour or shape, a third count)."""
  concept = f["concept"]
  other_colour = _pick(rng, [c for c in COLOUR_NAMES if c != f.get("colour")])
  other_shape = _pick(rng, [s for s in SHAPES if s != f.get("shape")])
  if concept == "direction":
    return [captions(dict(f, direction=d))[0] for d in DIRECTIONS] + [
        captions(dict(f, colour=other_colour))[0]]
  if concept == "size":
    return [captions(dict(f, colour=other_colour))[0],
            captions(dict(f, shape=other_shape, grows=not f["grows"]))[0]]
  if concept == "enter_leave":
    side = _pick(rng, [s for s in SIDES if s != f["side"]])
    return [captions(dict(f, side=side))[0],
            captions(dict(f, side=side, enters=not f["enters"]))[0],
            captions(dict(f, colour=other_colour))[0]]
  if concept == "order":
    objs = f["objects"]
    new = _pick(rng, [(c, s) for c in COLOUR_NAMES for s in SHAPES
                      if (c, s) not in objs.values()])
    return [captions(dict(f, objects=dict(objs, **{k: new})))[0] for k in "AB"]
  if concept == "colour_changes":
    pair = f["sequence"][:2]  # every count of changes, starting with either colour
    return [captions(dict(f, sequence=[pair[(i + start) % 2] for i in range(n + 1)]))[0]
            for start in (0, 1) for n in (1, 2, 3)]
  if concept == "scene":
    objs = list(f["objects"])
    out = []
    absent = [(c, s) for c in COLOUR_NAMES for s in SHAPES if (c, s) not in objs]
    for i, (c, s) in enumerate(objs):  # each object recoloured, then reshaped
      for o in (_pick(rng, [a for a in absent if a[1] == s]),
                _pick(rng, [a for a in absent if a[0] == c])):
        out.append(captions(dict(f, objects=objs[:i] + [o] + objs[i + 1:]))[0])
    if len(objs) > 1:
      out.append(captions(dict(f, objects=objs[:-1]))[0])
    if len(objs) < 3:
      out.append(captions(dict(f, objects=objs + [_pick(rng, absent)]))[0])
    return out
  raise ValueError(f"unknown concept {concept!r}; known: {CONCEPTS}")


def multiple_choice(truths: Sequence[str], wrong: Sequence[str],
                    rng) -> Tuple[List[str], List[int]]:
  """NUM_CHOICES distinct candidates: every truth (a video's own description and, for a twin
  pair, its twin's, which a time-blind model cannot tell apart) and foils; the answer index of
  each truth."""
  choices = list(dict.fromkeys(truths))
  for text in rng.permutation(np.array(list(dict.fromkeys(wrong)), dtype=object)):
    if len(choices) == NUM_CHOICES:
      break
    if text not in choices:
      choices.append(str(text))
  if len(choices) < NUM_CHOICES:
    raise AssertionError(f"too few distinct choices: {choices}")
  order = [int(i) for i in rng.permutation(NUM_CHOICES)]
  shuffled = [choices[i] for i in order]
  return shuffled, [shuffled.index(t) for t in truths]


def span_query(f) -> str:
  """What happens in the grounding window, in words."""
  concept = f["concept"]
  if concept == "order":
    return _articles(f"the {_name(f['objects'][f['query']])} appears")
  if concept == "scene":
    return captions(f)[2]
  if concept == "colour_changes":
    return f"the {f['shape']} changes colour {TIMES[len(f['sequence']) - 1]}"
  return "the " + captions(f)[1][2:]


MC_QUESTIONS = {"temporal": "what happens in the video?", "static": "what is in the video?"}


# ---- Videos ----------------------------------------------------------------------------------


def temporal_pair(rng, image_size: int = IMAGE_SIZE, num_frames: int = NUM_FRAMES,
                  concept: Optional[str] = None) -> Tuple[Video, Video]:
  """A temporal video and its twin (the same frames in another order, other captions)."""
  concept = concept or _pick(rng, TEMPORAL_CONCEPTS)
  scene = _Scene(rng, image_size, num_frames)
  perm, facts, twin_facts, colours = _CONCEPT_FNS[concept](rng, scene, image_size)
  frames = scene.render()
  text_seed = int(rng.integers(1 << 31))
  wrong = foils(facts, rng) + foils(twin_facts, rng)
  truths = [captions(facts)[0], captions(twin_facts)[0]]
  choices, answers = multiple_choice(truths, wrong, rng)
  videos = []
  frame_caps = np.array(scene.frame_captions(), dtype=object)
  for f, fr, caps, answer in ((facts, frames, frame_caps, answers[0]),
                              (twin_facts, frames[perm], frame_caps[perm], answers[1])):
    videos.append(Video(
        frames=fr, kind="temporal", concept=concept, captions=captions(f),
        label=action_label(f), qa=questions(f, np.random.default_rng(text_seed)),
        mc_question=MC_QUESTIONS["temporal"], mc_choices=choices, mc_answer=answer,
        span=tuple(f["window"]), span_query=span_query(f),
        span_colours=list(colours.values()), facts=f, frame_captions=list(caps)))
  return videos[0], videos[1]


def static_video(rng, image_size: int = IMAGE_SIZE, num_frames: int = NUM_FRAMES) -> Video:
  """One to three large shapes (distinct colour x shape), each in every frame."""
  scene = _Scene(rng, image_size, num_frames)
  n = int(rng.choice([1, 2, 3]))
  objs, placed, rgbs = [], [], []
  while len(objs) < n:
    o = (_pick(rng, COLOUR_NAMES), _pick(rng, SHAPES))
    if o in objs:
      continue
    r = rng.uniform(0.13, 0.18) * image_size
    for _ in range(100):
      cx, cy = rng.uniform(r + 1, image_size - r - 1, 2)
      if all((cx - x) ** 2 + (cy - y) ** 2 > (r + q + 2) ** 2 for x, y, q in placed):
        break
    else:
      break  # no room left: fewer objects
    objs.append(o)
    placed.append((cx, cy, r))
    rgbs.append(_rgb(rng, o[0]))
    scene.add(o[1], rgbs[-1], range(num_frames), [cx] * num_frames, [cy] * num_frames,
              [r] * num_frames, colour=o[0])
  frames = scene.render()
  facts = dict(concept="scene", objects=objs)
  choices, answers = multiple_choice([captions(facts)[0]], foils(facts, rng), rng)
  return Video(frames=frames, kind="static", concept="scene", captions=captions(facts),
               label=-1, qa=questions(facts, rng), mc_question=MC_QUESTIONS["static"],
               mc_choices=choices, mc_answer=answers[0], span=(0, num_frames),
               span_query=span_query(facts), span_colours=rgbs, facts=facts,
               frame_captions=scene.frame_captions())


def check_size(image_size: int, num_frames: int):
  if not 32 <= image_size <= 64:
    raise ValueError(f"synthetic video frames are 32-64 px, got {image_size}")
  if num_frames < 6:
    raise ValueError(f"synthetic videos need at least 6 frames (event windows of 4 among "
                     f"distractor frames), got {num_frames}")


def videos(num: int, seed: int, image_size: int = IMAGE_SIZE, num_frames: int = NUM_FRAMES):
  """`num` (Video, twin index) in order, in units of two: records 2k and 2k + 1 are either
  twins (the twin of video i is i ^ 1) or two static videos (twin -1). Keeping the units
  aligned lets a sampler shuffle whole units (`data.shuffle_block=2`) so that a video and its
  twin share a batch. Deterministic given the seed; `num` must be even."""
  check_size(image_size, num_frames)
  if num % 2:
    raise ValueError(f"the number of videos must be even (units of two): {num}")
  rng = np.random.default_rng(seed)
  for i in range(0, num, 2):
    if rng.random() < PAIR_PROBABILITY:
      a, b = temporal_pair(rng, image_size, num_frames)
      yield a, i + 1
      yield b, i
    else:
      yield static_video(rng, image_size, num_frames), -1
      yield static_video(rng, image_size, num_frames), -1
