"""Synthetic video questions whose answers a program checks, with program-written reasoning.

Four question kinds, each a deterministic function of a seed:

- `count`: "how many shapes appear?"  Answer: a number ("2"); the shapes come and go, so no
  single frame shows them all.
- `order`: "which appears first, the red circle or the blue square?"  Answer: one of the two.
- `direction`: "which way does the red circle move?"  Answer: left / right / up / down.
- `span`: "when is the red circle visible?"  Answer: a frame span "3-6" (1-based, inclusive),
  scored by temporal IoU.

Every video also has a `caption` naming each shape and when it is seen (or where it moves):
the text the model is pretrained on before it is asked questions.

Every example carries a chain-of-thought trace written from the scene's facts (which named
shape is seen in which frames, where it is at the start and end of its motion), then the
answer, in the fixed format `<think>...</think><answer>...</answer>` (`cot_response`), and
the answer alone as `<answer>...</answer>` (`answer_response`, for answer-only SFT and the
answer-only RL set). The frames carry the same nuisance as the video family's synthetic
videos (noisy background, per-frame jitter, dull distractor shapes no question names).

A scene is a clip of `num_frames` frames (8: its "frames" are the units every answer and
trace counts in, as seconds would be), and it can be read at any other number of frames over
the same clip (`render_frames`): fewer frames miss what is seen briefly, more frames add the
moments between (`_ClipScene`). The question, answer and trace do not change; the test-time
scaling evaluator reads the test questions so (`test_<R>f` splits, reasoning_data.py).
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional, Sequence, Tuple

import numpy as np

from vlx.data import video_render as V

KINDS = ("count", "order", "direction", "span")
# Every reasoning clip's frames: answers and traces count in them, however many frames the
# clip is read at (`render_frames`).
CLIP_FRAMES = V.NUM_FRAMES
DIRECTIONS = ("left", "right", "up", "down")
MAX_COUNT = 3
# Coarse position words the traces use for the start and end of a motion.
_COLUMN = ("left", "centre", "right")
_ROW = ("top", "middle", "bottom")


@dataclasses.dataclass(frozen=True)
class Sighting:
  """A named shape and the frames it is visible in: [first, last], 0-based inclusive."""
  name: str
  first: int
  last: int

  def frames_text(self) -> str:
    return f"frames {self.first + 1}-{self.last + 1}"


@dataclasses.dataclass
class Example:
  """One video question: frames uint8 [T, S, S, 3], the question, its answer (as the
  verifier expects it), the reasoning trace, and what the checker needs (`options` for
  `order`, `span` [first, last] 0-based inclusive for `span`)."""
  frames: np.ndarray
  kind: str
  question: str
  answer: str
  thought: str
  num_frames: int
  caption: str = ""          # every named shape and when it is seen (pretraining text)
  options: Tuple[str, ...] = ()
  span: Optional[Tuple[int, int]] = None

  def cot_response(self) -> str:
    return f"<think>{self.thought}</think><answer>{self.answer}</answer>"

  def answer_response(self) -> str:
    return f"<answer>{self.answer}</answer>"


def _objects(rng, n: int) -> List[Tuple[str, str]]:
  """n (colour, shape) pairs with distinct colours, so a colour names one object."""
  colours = rng.choice(len(V.COLOUR_NAMES), size=n, replace=False)
  return [(V.COLOUR_NAMES[int(c)], V._pick(rng, V.SHAPES))  # pylint: disable=protected-access
          for c in colours]


def _visible_window(rng, num_frames: int, min_len: int = 2) -> Tuple[int, int]:
  """[first, last] of a random run of >= min_len frames (0-based, inclusive)."""
  length = int(rng.integers(min_len, num_frames + 1))
  first = int(rng.integers(num_frames - length + 1))
  return first, first + length - 1


def _place(scene, rng, size, colour, shape, first, last, xs=None, ys=None):
  """Draws one object over frames first..last (static unless xs / ys give a path)."""
  r = V._radius(rng, size) * 0.8  # pylint: disable=protected-access
  n = last - first + 1
  if xs is None:
    cx, cy = rng.uniform(r, size - r, 2)
    xs, ys = [cx] * n, [cy] * n
  rgb = V._rgb(rng, colour)  # pylint: disable=protected-access
  scene.add(shape, rgb, range(first, last + 1), xs, ys, [r] * n)


def _trace(sightings: Sequence[Sighting]) -> str:
  return " ".join(f"{s.name}: {s.frames_text()}." for s in sightings)


def _count(rng, scene, size, num_frames):
  n = int(rng.integers(1, MAX_COUNT + 1))
  sightings = []
  for colour, shape in _objects(rng, n):
    first, last = _visible_window(rng, num_frames)
    _place(scene, rng, size, colour, shape, first, last)
    sightings.append(Sighting(f"{colour} {shape}", first, last))
  sightings.sort(key=lambda s: (s.first, s.name))
  return dict(question="how many shapes appear?", answer=str(n), caption=_trace(sightings),
              thought=f"{_trace(sightings)} {n} shape{'s' if n > 1 else ''}.")


def _order(rng, scene, size, num_frames):
  starts = sorted(rng.choice(num_frames - 1, size=2, replace=False).tolist())
  sightings = []
  for (colour, shape), first in zip(_objects(rng, 2), starts):
    last = int(rng.integers(first + 1, num_frames))
    _place(scene, rng, size, colour, shape, first, last)
    sightings.append(Sighting(f"{colour} {shape}", first, last))
  options = tuple(s.name for s in sightings)
  asked = options if rng.random() < 0.5 else options[::-1]
  return dict(question=f"which appears first, the {asked[0]} or the {asked[1]}?",
              answer=options[0], options=asked, caption=_trace(sightings),
              thought=f"{_trace(sightings)} the {options[0]} first.")


def _cell(x: float, y: float, size: int) -> str:
  col = _COLUMN[min(int(3 * x / size), 2)]
  row = _ROW[min(int(3 * y / size), 2)]
  return f"{row} {col}"


def _direction(rng, scene, size, num_frames):
  (colour, shape), = _objects(rng, 1)
  direction = DIRECTIONS[int(rng.integers(4))]
  first, last = _visible_window(rng, num_frames, min_len=3)
  r = V._radius(rng, size) * 0.8  # pylint: disable=protected-access
  lo, hi = r, size - r
  start, end = (lo, hi) if direction in ("right", "down") else (hi, lo)
  path = np.linspace(start, end, last - first + 1)
  across = np.full_like(path, rng.uniform(lo, hi))
  xs, ys = (path, across) if direction in ("left", "right") else (across, path)
  _place(scene, rng, size, colour, shape, first, last, list(xs), list(ys))
  name = f"{colour} {shape}"
  seen = (f"{name}: {_cell(xs[0], ys[0], size)} in frame {first + 1}, "
          f"{_cell(xs[-1], ys[-1], size)} in frame {last + 1}.")
  return dict(question=f"which way does the {name} move?", answer=direction, caption=seen,
              thought=f"{seen} moves {direction}.")


def _span(rng, scene, size, num_frames):
  objects = _objects(rng, int(rng.integers(1, 3)))
  sightings = []
  for colour, shape in objects:
    first, last = _visible_window(rng, num_frames)
    _place(scene, rng, size, colour, shape, first, last)
    sightings.append(Sighting(f"{colour} {shape}", first, last))
  target = sightings[0]
  return dict(question=f"when is the {target.name} visible?",
              answer=f"{target.first + 1}-{target.last + 1}",
              span=(target.first, target.last),
              caption=_trace(sorted(sightings, key=lambda s: (s.first, s.name))),
              thought=f"{target.name}: {target.frames_text()}.")


_BUILDERS = {"count": _count, "order": _order, "direction": _direction, "span": _span}


class _ClipScene(V._Scene):  # pylint: disable=protected-access
  """A scene drawn at the clip's `num_frames` frames that can also be read at any other number
  of frames R over the same clip: frame j of R sits at time (j + 0.5) * T / R - 0.5 in the
  clip's frame units (frame i of T at time i), and an object drawn in frames first..last is
  seen there when that time falls in [first - 0.5, last + 0.5), at its drawn position
  interpolated between the neighbouring frames (a moving shape between two of its
  positions). At R = T this is the clip as drawn, the same draws in the same order."""

  def __init__(self, rng, size: int, num_frames: int):
    self.tracks = []  # (frames, what was drawn in each) per object, in drawing order
    super().__init__(rng, size, num_frames)

  def add(self, shape, rgb, frames, xs, ys, rs, colour: Optional[str] = None):
    frames = list(frames)
    if not len(frames) == len(xs) == len(ys) == len(rs):
      raise ValueError("a shape needs a position and radius per frame it is drawn in")
    super().add(shape, rgb, frames, xs, ys, rs, colour)
    self.tracks.append((frames, [self.plan[t][-1] for t in frames]))  # jitter included

  def render_at(self, num_frames: int) -> np.ndarray:
    if num_frames == self.num_frames:
      return self.render()
    plan = [[] for _ in range(num_frames)]
    for frames, drawn in self.tracks:
      shape, rgb = drawn[0][0], drawn[0][4]
      at = np.array([d[1:4] for d in drawn], np.float64)  # x, y, radius per drawn frame
      for j in range(num_frames):
        when = (j + 0.5) * self.num_frames / num_frames - 0.5
        if frames[0] - 0.5 <= when < frames[-1] + 0.5:
          x, y, r = (float(np.interp(when, frames, at[:, k])) for k in range(3))
          plan[j].append((shape, x, y, r, rgb))
    return V._render(plan, self.size, self.rng)  # pylint: disable=protected-access


def make_example(seed: int, kind: str, image_size: int = V.IMAGE_SIZE,
                 num_frames: int = CLIP_FRAMES,
                 render_frames: Optional[int] = None) -> Example:
  """The example of `kind` for `seed` (the same seed gives the same frames and text), its
  clip read at `render_frames` frames (default: the clip's `num_frames`; the question,
  answer and trace, in the clip's frames, are the same whatever it is)."""
  if kind not in _BUILDERS:
    raise ValueError(f"unknown question kind {kind!r} (known: {', '.join(KINDS)})")
  V.check_size(image_size, num_frames)
  render_frames = num_frames if render_frames is None else int(render_frames)
  if render_frames < 1:
    raise ValueError(f"render_frames must be >= 1, got {render_frames}")
  rng = np.random.default_rng([seed, KINDS.index(kind)])
  scene = _ClipScene(rng, image_size, num_frames)
  fields = _BUILDERS[kind](rng, scene, image_size, num_frames)
  return Example(frames=scene.render_at(render_frames), kind=kind, num_frames=num_frames,
                 **fields)


def examples(num: int, seed: int, kinds: Sequence[str] = KINDS, **kw) -> List[Example]:
  """`num` examples cycling through `kinds`, the i-th drawn from (seed, i)."""
  return [make_example(seed * 1_000_003 + i, kinds[i % len(kinds)], **kw) for i in range(num)]
