"""Checkers for the reasoning videos' answers and the verifiable rewards built on them.

A response must be `<think>...</think><answer>...</answer>` (the thought optional for the
answer-only format), nothing outside the tags but whitespace. `parse` takes a response apart
strictly: anything else (no answer block, text outside the tags, several answer or think
blocks, an answer before the thought, an empty answer) has no answer, so it earns no
accuracy whatever the text contains. The answer is then checked against the question's kind:
a count is a number, an order answer one of the two shapes named, a direction one of four
words, a span `a-b` with 1 <= a <= b <= T. A well-formed answer of the wrong type scores 0.

Rewards (`vlx.registry.REWARDS`, each `(response, example) -> float`): `accuracy` (1 if the
answer is right; for a span, if its temporal IoU is >= 0.5), `format` (1 if the response is in
the full `<think>...</think><answer>...</answer>` format with a non-empty thought),
`temporal_iou` (a span answer's IoU with the true span, else 0). `t_grpo_bonus` is
T-GRPO's contrast of ordered and shuffled frames.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Optional, Tuple

import numpy as np

from vlx import registry
from vlx.families.video_lmm import reasoning_videos as RV

_BLOCK = re.compile(
    r"^\s*(?:<think>(?P<think>.*?)</think>\s*)?<answer>(?P<answer>.*?)</answer>\s*$", re.DOTALL)
_TAGS = ("<think>", "</think>", "<answer>", "</answer>")
_SPAN = re.compile(r"^(\d+)\s*-\s*(\d+)$")
_NUMBER_WORDS = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5}


@dataclasses.dataclass(frozen=True)
class Parsed:
  """What a response says, if it is well formed: the answer (stripped, lower case) and the
  thought (None when there is no think block)."""
  answer: Optional[str]
  thought: Optional[str]


def parse(response: str) -> Parsed:
  """The response's answer and thought, or `Parsed(None, None)` if it breaks the format."""
  if any(response.count(tag) > 1 for tag in _TAGS):
    return Parsed(None, None)
  m = _BLOCK.match(response)
  if m is None:
    return Parsed(None, None)
  answer = " ".join(m.group("answer").split()).lower()
  think = m.group("think")
  return Parsed(answer or None, None if think is None else think.strip())


def _count(answer: str) -> Optional[int]:
  if answer.isdigit():
    return int(answer)
  return _NUMBER_WORDS.get(answer)


def parse_span(answer: str, num_frames: int) -> Optional[Tuple[int, int]]:
  """'a-b' (1-based, inclusive, within the video) -> (a - 1, b - 1), else None."""
  m = _SPAN.match(answer)
  if m is None:
    return None
  a, b = int(m.group(1)), int(m.group(2))
  if not 1 <= a <= b <= num_frames:
    return None
  return a - 1, b - 1


def span_iou(a: Tuple[int, int], b: Tuple[int, int]) -> float:
  """IoU of two inclusive frame spans."""
  inter = max(0, min(a[1], b[1]) - max(a[0], b[0]) + 1)
  union = (a[1] - a[0] + 1) + (b[1] - b[0] + 1) - inter
  return inter / union


def typed_answer_ok(answer: str, example: RV.Example) -> bool:
  """Whether `answer` is of the type the question asks for (not whether it is right)."""
  kind = example.kind
  if kind == "count":
    return _count(answer) is not None
  if kind == "order":
    return answer in example.options
  if kind == "direction":
    return answer in RV.DIRECTIONS
  if kind == "span":
    return parse_span(answer, example.num_frames) is not None
  raise ValueError(f"unknown question kind {kind!r}")


def temporal_iou(response: str, example: RV.Example) -> float:
  answer = parse(response).answer
  if example.kind != "span" or answer is None:
    return 0.0
  span = parse_span(answer, example.num_frames)
  return 0.0 if span is None else span_iou(span, example.span)


def accuracy(response: str, example: RV.Example) -> float:
  answer = parse(response).answer
  if answer is None or not typed_answer_ok(answer, example):
    return 0.0
  if example.kind == "span":
    return float(temporal_iou(response, example) >= 0.5)
  if example.kind == "count":
    return float(_count(answer) == int(example.answer))
  return float(answer == example.answer)


def format_ok(response: str, example: Optional[RV.Example] = None) -> float:
  del example
  parsed = parse(response)
  return float(parsed.answer is not None and bool(parsed.thought))


registry.REWARDS.register("accuracy")(accuracy)
registry.REWARDS.register("format")(format_ok)
registry.REWARDS.register("temporal_iou")(temporal_iou)


def t_grpo_bonus(correct_ordered, correct_shuffled, alpha: float = 0.3, mu: float = 0.8):
  """T-GRPO (Video-R1): per prompt, if the group answering from ordered frames is right more
  often than `mu` times the group answering from shuffled frames, its correct responses get
  `alpha` on top of their reward; nothing otherwise, so the model is paid for using the
  order of the frames, not for answers a single frame gives away.
  correct_ordered [P, G], correct_shuffled [P, G'] (0/1) -> bonus [P, G]."""
  ordered = np.asarray(correct_ordered, np.float64)
  shuffled = np.asarray(correct_shuffled, np.float64)
  wins = ordered.mean(axis=1) > mu * shuffled.mean(axis=1)
  return alpha * wins[:, None] * ordered
