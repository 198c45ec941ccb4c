"""Config loading (`path.py:arg`), `--config.a.b=value` overrides, and shared defaults.

An unknown key is a one-line error naming the key; it never becomes a silent
new field (ml_collections ConfigDicts are locked after `get_config`).
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import os
from typing import List, Sequence, Tuple

import ml_collections


class ConfigError(ValueError):
  """A problem with the user's config or overrides; printed as one line, no traceback."""


def load_config_file(spec: str) -> ml_collections.ConfigDict:
  """'configs/clip.py:tiny' -> get_config('tiny') from that file."""
  path, _, arg = spec.partition(":")
  if not os.path.exists(path):
    raise ConfigError(f"config file {path!r} does not exist")
  module_spec = importlib.util.spec_from_file_location(
      f"vlx_config_{os.path.basename(path)[:-3]}", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  try:
    config = module.get_config(arg) if arg else module.get_config()
  except ValueError as e:
    raise ConfigError(f"{spec}: {e}") from None
  config.lock()
  return config


def _parse_value(text: str, default):
  if isinstance(default, bool):
    low = text.lower()
    if low in ("true", "1", "yes"):
      return True
    if low in ("false", "0", "no"):
      return False
    raise ConfigError(f"expected a boolean, got {text!r}")
  if isinstance(default, str):
    return text
  if default is None:
    try:
      return ast.literal_eval(text)
    except (ValueError, SyntaxError):
      return text
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError) as e:
    raise ConfigError(f"cannot parse {text!r}") from e
  if isinstance(default, float) and isinstance(value, int):
    value = float(value)
  if isinstance(default, (list, tuple)) and isinstance(value, (list, tuple)):
    return type(default)(value)
  if type(default) is not type(value) and not isinstance(default, ml_collections.ConfigDict):
    raise ConfigError(f"expected {type(default).__name__}, got {text!r}")
  return value


def set_key(config: ml_collections.ConfigDict, dotted: str, text: str):
  node, parts = config, dotted.split(".")
  for i, part in enumerate(parts):
    here = ".".join(parts[:i + 1])
    if not isinstance(node, (ml_collections.ConfigDict, dict)) or part not in node:
      known = list(node.keys()) if isinstance(node, (ml_collections.ConfigDict, dict)) else []
      close = difflib.get_close_matches(part, known, n=1)
      hint = f" (did you mean {'.'.join(parts[:i] + close)!r}?)" if close else ""
      raise ConfigError(f"unknown config key {here!r}{hint}")
    if i == len(parts) - 1:
      try:
        value = _parse_value(text, node[part])
      except ConfigError as e:
        raise ConfigError(f"bad value for config key {dotted!r}: {e}") from None
      with node.unlocked() if isinstance(node, ml_collections.ConfigDict) else _null():
        node[part] = value
    else:
      node = node[part]


class _null:
  def __enter__(self):
    return self

  def __exit__(self, *a):
    return False


def apply_overrides(config, overrides: Sequence[Tuple[str, str]]):
  for key, value in overrides:
    set_key(config, key, value)
  return config


def parse_argv(argv: List[str]):
  """Splits argv into (flags dict, config overrides) — `--config.x=y` are overrides."""
  flags, overrides = {}, []
  for arg in argv:
    if not arg.startswith("--") or "=" not in arg:
      if arg.startswith("--") and arg[2:] in ("help",):
        flags["help"] = "1"
        continue
      raise ConfigError(f"expected --name=value, got {arg!r}")
    key, value = arg[2:].split("=", 1)
    if key.startswith("config."):
      overrides.append((key[len("config."):], value))
    else:
      flags[key] = value
  return flags, overrides
