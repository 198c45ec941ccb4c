"""Scenes of coloured shapes with compositional captions (pure numpy, deterministic by seed).

Each scene has one large *primary* shape (its colour x shape is the class label)
and zero to two smaller distractors placed without overlap. Captions name every
object's size, colour and shape, the distractors' positions relative to the
primary, and the primary's region of the image, in several paraphrases, so that a
model must learn colour, shape, size, count and position to match them.
"""

from __future__ import annotations

import numpy as np

COLOURS = {
    "red": (220, 40, 40), "green": (40, 190, 60), "blue": (50, 90, 235),
    "yellow": (235, 220, 40), "magenta": (210, 50, 210), "cyan": (40, 210, 220),
    "white": (240, 240, 240), "orange": (245, 140, 30),
}
SHAPES = ("circle", "square", "triangle", "cross")
COLOUR_NAMES = tuple(COLOURS)
NUM_CLASSES = len(COLOURS) * len(SHAPES)
MAX_OBJECTS = 3
COUNT_WORDS = {1: "one", 2: "two", 3: "three"}


def class_name(label: int) -> str:
  return f"{COLOUR_NAMES[label // len(SHAPES)]} {SHAPES[label % len(SHAPES)]}"


def class_names():
  return [class_name(i) for i in range(NUM_CLASSES)]


def _mask(shape: str, xx, yy, cx, cy, r):
  dx, dy = xx - cx, yy - cy
  if shape == "circle":
    return dx * dx + dy * dy <= r * r
  if shape == "square":
    h = 0.82 * r
    return (np.abs(dx) <= h) & (np.abs(dy) <= h)
  if shape == "triangle":
    # Upward equilateral triangle inscribed in the radius-r circle.
    top, base = -r, 0.5 * r
    half_width = (dy - top) / (base - top) * 0.866 * r
    return (dy >= top) & (dy <= base) & (np.abs(dx) <= half_width)
  if shape == "cross":
    w = 0.34 * r
    return ((np.abs(dx) <= w) & (np.abs(dy) <= r)) | ((np.abs(dy) <= w) & (np.abs(dx) <= r))
  raise ValueError(shape)


REGIONS = ("top left", "top", "top right", "left", "center", "right", "bottom left", "bottom",
           "bottom right")


def zeroshot_templates():
  """Prompts in the captions' own style, ensembled over the nine regions (as CLIP ensembles
  its 80 photo templates) so a class embedding does not depend on where the shape is."""
  forms = ("a large {{}} in the {}", "a picture of a large {{}} in the {}",
           "there is a large {{}} in the {}")
  return tuple(f.format(r) for f in forms for r in REGIONS)


def _relation(dx: float, dy: float) -> str:
  """Where a distractor lies relative to the primary (image y grows downwards)."""
  if abs(dx) >= abs(dy):
    return "to the left" if dx < 0 else "to the right"
  return "above it" if dy < 0 else "below it"


def region_name(row: int, col: int) -> str:
  """One of nine regions (`REGIONS`) by its row and column of thirds."""
  col_word = ("left", "", "right")[col]
  row_word = ("top", "", "bottom")[row]
  if not col_word and not row_word:
    return "center"
  return f"{row_word} {col_word}".strip()


def _phrase(obj) -> str:
  return f"{obj['size']} {obj['colour']} {obj['shape']}"


def captions_for(objects):
  """Five paraphrases of one scene; the primary object always comes first in meaning."""
  p, others = objects[0], objects[1:]
  rels = [_relation(o["cx"] - p["cx"], o["cy"] - p["cy"]) for o in others]
  with_rel = "".join(
      (" with" if i == 0 else " and") + f" a {_phrase(o)} {rel}" for i, (o, rel) in enumerate(
          zip(others, rels)))
  listing = ", ".join(f"a {_phrase(o)}" for o in objects)
  region = region_name(p["row"], p["col"])
  n = len(objects)
  shapes_word = "shape" if n == 1 else "shapes"
  caps = [
      f"a {_phrase(p)} in the {region}{with_rel}",
      f"a picture of a {_phrase(p)} in the {region}{with_rel}",
      f"{COUNT_WORDS[n]} {shapes_word}: {listing}, the large one in the {region}",
      f"there is a {_phrase(p)} in the {region}" + "".join(
          f" and a {_phrase(o)}" for o in others),
  ]
  if others:
    o, rel = others[0], rels[0]
    inverse = {"to the left": "left of", "to the right": "right of", "above it": "above",
               "below it": "below"}[rel]
    caps.append(f"a {_phrase(o)} {inverse} a {_phrase(p)} in the {region}" + "".join(
        f" and a {_phrase(q)}" for q in others[1:]))
  else:
    caps.append(f"a single {_phrase(p)} in the {region} of the image")
  return caps


def salient_caption(captions) -> str:
  """The first caption without its distractors: 'a large red circle in the top left'.

  Real alt-text often names only the main object; training on such captions some of
  the time teaches a model which object a scene is about, which zero-shot prompts ask.
  """
  return str(captions[0]).split(" with ")[0]


def render_scene(rng: np.random.Generator, image_size: int = 64):
  """Returns (image uint8 [S, S, 3], objects list, captions list of 5 strings)."""
  n = int(rng.choice([1, 2, 3], p=[0.06, 0.34, 0.6]))
  yy, xx = np.mgrid[:image_size, :image_size].astype(np.float32) + 0.5
  bg = rng.uniform(20, 70)
  image = np.full((image_size, image_size, 3), bg, np.float32)
  image += rng.normal(0, 5, image.shape)
  objects = []
  scale = image_size / 64
  for i in range(n):
    r = (rng.uniform(11, 15) if i == 0 else rng.uniform(5.5, 8)) * scale
    row, col = (int(v) for v in rng.integers(3, size=2))
    for _ in range(100):
      if i == 0:
        lo, cell = r + 1, (image_size - 2 * r - 2) / 3
        cx, cy = lo + (col + rng.uniform()) * cell, lo + (row + rng.uniform()) * cell
      else:
        cx, cy = rng.uniform(r + 1, image_size - r - 1, size=2)
      if all((cx - o["cx"]) ** 2 + (cy - o["cy"]) ** 2 > (r + o["r"] + 2) ** 2
             for o in objects):
        break
    else:
      break  # no room left: fewer objects
    colour = COLOUR_NAMES[rng.integers(len(COLOURS))]
    shape = SHAPES[rng.integers(len(SHAPES))]
    rgb = np.clip(np.array(COLOURS[colour]) + rng.normal(0, 10, 3), 0, 255)
    image[_mask(shape, xx, yy, cx, cy, r)] = rgb
    objects.append(dict(cx=float(cx), cy=float(cy), r=float(r), row=row, col=col,
                        colour=colour, shape=shape,
                        size="large" if i == 0 else "small"))
  image = np.clip(image, 0, 255).astype(np.uint8)
  return image, objects, captions_for(objects)


def scene_example(rng: np.random.Generator, image_size: int = 64):
  """A scene as a flat record of fixed-shape arrays (what the TFDS builder stores)."""
  image, objects, caps = render_scene(rng, image_size)
  boxes = np.zeros((MAX_OBJECTS, 4), np.float32)
  colours = np.full((MAX_OBJECTS,), -1, np.int64)
  shapes = np.full((MAX_OBJECTS,), -1, np.int64)
  for i, o in enumerate(objects):
    # Normalized [ymin, xmin, ymax, xmax], as TFDS bounding boxes.
    boxes[i] = np.clip([(o["cy"] - o["r"]) / image_size, (o["cx"] - o["r"]) / image_size,
                        (o["cy"] + o["r"]) / image_size, (o["cx"] + o["r"]) / image_size], 0, 1)
    colours[i] = COLOUR_NAMES.index(o["colour"])
    shapes[i] = SHAPES.index(o["shape"])
  label = int(colours[0] * len(SHAPES) + shapes[0])
  return {
      "image": image,
      "captions": np.array(caps, dtype=object),
      "label": label,
      "colour": int(colours[0]),
      "shape": int(shapes[0]),
      "num_objects": len(objects),
      "boxes": boxes,
      "object_colours": colours,
      "object_shapes": shapes,
  }
