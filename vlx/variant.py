"""The one variant parser of every config: `configs/<name>.py:<variant>` arguments such as
'b16,smoke', 'tiny,blind' or 'ft=DIR,smoke', each part typed (a size, a smoke word, one of the
config's own words, or a `key=value`); an unknown part is an error naming the valid words, so
a typo never runs the default."""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence, Union


SMOKE_WORDS = ("smoke", "runlocal")  # big_vision's name for it, too


class UnknownVariantError(ValueError):
  """A variant word no config knows; `valid` lists the words this config takes."""

  def __init__(self, message: str, valid: Sequence[str]):
    super().__init__(message)
    self.valid = tuple(valid)


@dataclasses.dataclass(frozen=True)
class Variant:
  """A parsed `configs/<family>.py:<variant>` argument, e.g. 'b16,smoke' or 'ft=DIR,smoke'.

  `words` holds the config-specific flags present ('blind'); `values` the config-specific
  `key=value` parts present ({'ft': DIR}). `size_given` tells a default size from a named one.
  """
  size: str = "tiny"
  smoke: bool = False
  words: frozenset = frozenset()
  values: Mapping[str, str] = dataclasses.field(default_factory=dict)
  size_given: bool = False


def parse_variant(arg: Union[str, "Variant", None], *, sizes: Sequence[str] = ("tiny",),
                  words: Sequence[str] = (), keys: Sequence[str] = ()) -> Variant:
  """The one variant parser of every config: each comma-separated part must be a size, a smoke
  word, one of the config's `words` or a `key=value` with one of its `keys`; anything else is
  a ValueError naming the part and every valid word (a typo must not run the default)."""
  if isinstance(arg, Variant):
    return arg
  valid = [*sizes, *SMOKE_WORDS, *words, *(f"{k}=DIR" for k in keys)]

  def fail(problem):
    raise UnknownVariantError(f"{problem}; valid variant words: {', '.join(valid)}", valid)

  size, smoke, flags, values = None, False, set(), {}
  for part in (p.strip() for p in (arg or "").split(",")):
    if not part:
      continue
    key, eq, value = part.partition("=")
    if eq:
      if key not in keys:
        fail(f"unknown variant word {part!r}")
      if not value:
        fail(f"variant word {part!r} needs a value ({key}=DIR)")
      if key in values:
        fail(f"variant word {key}= given twice")
      values[key] = value
    elif part in sizes:
      if size is not None and size != part:
        fail(f"two sizes in one variant: {size!r} and {part!r}")
      size = part
    elif part in SMOKE_WORDS:
      smoke = True
    elif part in words:
      flags.add(part)
    else:
      fail(f"unknown variant word {part!r}")
  return Variant(size=size or sizes[0], smoke=smoke, words=frozenset(flags), values=values,
                 size_given=size is not None)
