"""Boxes as location tokens (Pix2Seq, OFA, PaliGemma): each coordinate quantised to one of
`num_bins` bins, each bin one token id of a contiguous range `[start, start + num_bins)`.

Order: `y_min, x_min, y_max, x_max` (PaliGemma's), coordinates normalised to [0, 1] by the
image's height and width. A coordinate v goes to bin `min(floor(v * num_bins), num_bins - 1)`
and comes back as the bin's centre `(bin + 0.5) / num_bins`, so a round trip is within half a
bin (1 / (2 * num_bins)). PaliGemma's tokenizer names them `<loc0000>` .. `<loc1023>`.

The parsers take generated ids (EOS kept; whatever follows it, the decoder's padding, is
ignored) and return None for malformed output: a location slot holding another token, a missing or extra coordinate, a class name
the list does not know, no EOS. A box whose corners come in the other order is put in order
(a constrained decoder guarantees the grammar, not the order of two coordinates).
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class LocTokens:
  start: int
  num_bins: int = 1024

  def to_bins(self, box) -> np.ndarray:
    """`box [..., 4]` (y0, x0, y1, x1 in [0, 1]) -> bins `[..., 4]` int32."""
    v = np.asarray(box, np.float64)
    if not np.isfinite(v).all():
      raise ValueError(f"a box coordinate is not finite: {v.reshape(-1, 4)[:2].tolist()}")
    v = np.clip(v, 0.0, 1.0)
    return np.minimum(np.floor(v * self.num_bins), self.num_bins - 1).astype(np.int32)

  def from_bins(self, bins) -> np.ndarray:
    """bins `[..., 4]` -> the bins' centres `[..., 4]` float32."""
    return ((np.asarray(bins, np.float64) + 0.5) / self.num_bins).astype(np.float32)

  def encode(self, box) -> np.ndarray:
    """`box [..., 4]` -> token ids `[..., 4]`."""
    return self.to_bins(box) + self.start

  def decode(self, ids) -> np.ndarray:
    """Token ids `[..., 4]` (each a location token) -> box `[..., 4]`."""
    ids = np.asarray(ids)
    if not np.all(self.is_loc(ids)):
      raise ValueError(f"not location tokens: {ids[~self.is_loc(ids)][:4].tolist()}")
    return self.from_bins(ids - self.start)

  def is_loc(self, ids) -> np.ndarray:
    ids = np.asarray(ids)
    return (ids >= self.start) & (ids < self.start + self.num_bins)

  def names(self) -> list:
    """PaliGemma's spelling of each bin's token: `<loc0000>` ..."""
    return [f"<loc{i:04d}>" for i in range(self.num_bins)]


def _ordered(box: np.ndarray) -> np.ndarray:
  y0, x0, y1, x1 = box
  return np.array([min(y0, y1), min(x0, x1), max(y0, y1), max(x0, x1)], np.float32)


def _until_eos(ids: Sequence[int], eos: int) -> Optional[list]:
  ids = [int(i) for i in ids]
  return ids[:ids.index(eos)] if eos in ids else None


def parse_box(ids: Sequence[int], loc: LocTokens, eos: int) -> Optional[np.ndarray]:
  """Grounding output `4 location tokens, EOS` -> box `[4]`, or None if malformed."""
  body = _until_eos(ids, eos)
  if body is None or len(body) != 4 or not loc.is_loc(body).all():
    return None
  return _ordered(loc.decode(body))


def parse_detections(ids: Sequence[int], loc: LocTokens, eos: int,
                     names: Sequence[Sequence[int]], sep: Optional[int] = None):
  """Detection output `(4 location tokens, a class name's ids[, sep])*, EOS` -> [(box [4],
  class index)], or None if malformed. `names[c]` is class c's token ids."""
  body = _until_eos(ids, eos)
  if body is None:
    return None
  by_ids = {tuple(int(t) for t in n): c for c, n in enumerate(names)}
  out, i = [], 0
  while i < len(body):
    if i + 4 > len(body) or not loc.is_loc(body[i:i + 4]).all():
      return None
    box = _ordered(loc.decode(body[i:i + 4]))
    i += 4
    end = i
    while end < len(body) and not loc.is_loc([body[end]])[0] and body[end] != sep:
      end += 1
    name = tuple(body[i:end])
    if name not in by_ids:
      return None
    out.append((box, by_ids[name]))
    i = end
    if sep is not None:
      if i < len(body) and body[i] == sep:
        i += 1
        if i == len(body):
          return None  # a separator promises another object
      elif i < len(body):
        return None
  return out
