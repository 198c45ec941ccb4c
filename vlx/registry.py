"""One name -> constructor table per kind of component.

Configs name components by string (`model.name = "two_tower"`,
`objectives = {"clip": 1.0}`); this module is the only place that turns such a
string into code, so there are no if-chains over model families anywhere else.
"""

from __future__ import annotations

import difflib
from typing import Any, Callable, Dict


class Registry:
  """A named table of constructors with helpful errors for unknown names."""

  def __init__(self, kind: str):
    self.kind = kind
    self._table: Dict[str, Callable[..., Any]] = {}

  def register(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def decorator(fn):
      if name in self._table and self._table[name] is not fn:
        raise ValueError(f"{self.kind} {name!r} is registered twice")
      self._table[name] = fn
      return fn
    return decorator

  def get(self, name: str) -> Callable[..., Any]:
    _import_builtin_components()
    if name not in self._table:
      close = difflib.get_close_matches(name, list(self._table), n=3)
      hint = f"; did you mean {', '.join(close)}?" if close else ""
      raise KeyError(
          f"unknown {self.kind} {name!r} (known: {', '.join(sorted(self._table))}){hint}")
    return self._table[name]

  def names(self):
    _import_builtin_components()
    return sorted(self._table)

  def __contains__(self, name: str) -> bool:
    _import_builtin_components()
    return name in self._table


MODELS = Registry("model")
OBJECTIVES = Registry("objective")
EVALUATORS = Registry("evaluator")
DATASETS = Registry("dataset")
PP_OPS = Registry("preprocessing op")
CURRICULA = Registry("curriculum")

_IMPORTED = False


def _import_builtin_components():
  """Import the modules whose decorators fill the registries (lazily, once)."""
  global _IMPORTED
  if _IMPORTED:
    return
  _IMPORTED = True
  # pylint: disable=g-import-not-at-top,unused-import
  from vlx.models import two_tower, coca, fusion  # noqa: F401
  from vlx.objectives import contrastive, captioning, fusion as fusion_objectives  # noqa: F401
  from vlx.evals import zeroshot, retrieval, linear_probe, captioning as captioning_eval  # noqa: F401
  from vlx.evals import fusion as fusion_evals  # noqa: F401
  from vlx.data import sources, pp_ops, scene_qa, vqa_v2, ref_coco  # noqa: F401
  from vlx.train import curriculum  # noqa: F401
