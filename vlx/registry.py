"""One name -> constructor table per kind of component.

Configs name components by string (`model.name`, the keys of `objectives` and `evals`,
`data.name`, the ops of a `pp_*` string, `task`); this module is the only place that turns such a
string into code, so there are no if-chains over model families anywhere else.

The core knows no component: a module registers its own with the decorators below. The
built-in ones are listed, by module path, in a catalogue (`CATALOGUE`, outside the core)
that the first lookup imports through importlib, so no import statement leads from here to
a component and back (big_vision's module-path lookup). A user's own modules are named by
`config.imports` and imported by `vlx.build.import_components` before anything is built.
"""

from __future__ import annotations

import difflib
import importlib
import os
import sys
from typing import Any, Callable, Dict

# The module whose `MODULES` lists the built-in component modules.
CATALOGUE = "vlx.components"


class Registry:
  """A named table of constructors with helpful errors for unknown names."""

  def __init__(self, kind: str):
    self.kind = kind
    self._table: Dict[str, Callable[..., Any]] = {}
    self._origin: Dict[str, Any] = {}  # name -> (registering file, line, qualname)

  def register(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    # A file run twice (loaded by path as a config file, then imported by name through
    # config.imports) defines its components again as new objects: the same definition, so
    # it replaces itself; two different definitions under one name still clash.
    caller = sys._getframe(1)  # pylint: disable=protected-access
    source, line = caller.f_globals.get("__file__"), caller.f_lineno

    def decorator(fn):
      origin = ((os.path.realpath(source), line, getattr(fn, "__qualname__", None))
                if source else None)
      if name in self._table and self._table[name] is not fn and (
          origin is None or self._origin.get(name) != origin):
        raise ValueError(f"{self.kind} {name!r} is registered twice")
      self._table[name] = fn
      self._origin[name] = origin
      return fn
    return decorator

  def get(self, name: str) -> Callable[..., Any]:
    import_builtin_components()
    if name not in self._table:
      close = difflib.get_close_matches(name, list(self._table), n=3)
      hint = f"; did you mean {', '.join(close)}?" if close else ""
      raise KeyError(
          f"unknown {self.kind} {name!r} (known: {', '.join(sorted(self._table))}){hint}")
    return self._table[name]

  def names(self):
    import_builtin_components()
    return sorted(self._table)

  def __contains__(self, name: str) -> bool:
    import_builtin_components()
    return name in self._table


MODELS = Registry("model")
OBJECTIVES = Registry("objective")
EVALUATORS = Registry("evaluator")
DATASETS = Registry("dataset")
PP_OPS = Registry("preprocessing op")
CURRICULA = Registry("curriculum")
TASKS = Registry("task")
# Verifiable rewards of policy-gradient post-training: (response text, example) -> float.
REWARDS = Registry("reward")

_IMPORTED = False


def import_builtin_components():
  """Import the catalogue's modules, whose decorators fill the registries (lazily, once).

  The flag is set first: a component that looks a name up while it is being imported sees
  the tables as they are instead of starting the imports again."""
  global _IMPORTED
  if _IMPORTED:
    return
  _IMPORTED = True
  try:
    for path in importlib.import_module(CATALOGUE).MODULES:
      importlib.import_module(path)
  except BaseException:
    _IMPORTED = False  # a failed import is retried (and reported again) at the next lookup
    raise
