"""Config loading (`path.py:arg`), `--config.a.b=value` overrides, and shared defaults.

An unknown key is a one-line error naming the key; it never becomes a silent
new field (ml_collections ConfigDicts are locked after `get_config`).
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import os
import traceback
from typing import List, Sequence, Tuple

import ml_collections


class ConfigError(ValueError):
  """A problem with the user's config or overrides; printed as one line, no traceback."""


def _where(error: BaseException, path: str) -> str:
  """' (line N)' of the innermost traceback frame in `path`, or ''."""
  frames = [f for f in traceback.extract_tb(error.__traceback__)
            if os.path.abspath(f.filename) == os.path.abspath(path)]
  return f" (line {frames[-1].lineno})" if frames else ""


def load_config_module(path: str):
  """Imports a config file; a missing file, an import that raises or a file without
  `get_config` is a ConfigError naming the file (and the failing line)."""
  if not path.endswith(".py"):
    raise ConfigError(f"config file {path!r}: expected a Python file, configs/<family>.py")
  if not os.path.isfile(path):
    raise ConfigError(f"config file {path!r} does not exist")
  module_spec = importlib.util.spec_from_file_location(
      f"vlx_config_{os.path.basename(path)[:-3]}", path)
  module = importlib.util.module_from_spec(module_spec)
  try:
    module_spec.loader.exec_module(module)
  except Exception as e:  # pylint: disable=broad-except
    raise ConfigError(f"config file {path!r} failed to import{_where(e, path)}: "
                      f"{type(e).__name__}: {_one_line(e)}") from None
  if not callable(getattr(module, "get_config", None)):
    raise ConfigError(f"config file {path!r} defines no get_config(arg) function")
  return module


def _one_line(error: BaseException) -> str:
  return " ".join(str(error).split()) or "(no message)"


def load_config_file(spec: str) -> ml_collections.ConfigDict:
  """'configs/clip.py:tiny' -> get_config('tiny') from that file."""
  path, _, arg = spec.partition(":")
  module = load_config_module(path)
  try:
    config = module.get_config(arg) if arg else module.get_config()
  except ValueError as e:  # the config's own refusal (a bad variant): its message is the story
    raise ConfigError(f"{spec}: {_one_line(e)}") from None
  except Exception as e:  # pylint: disable=broad-except
    frame = traceback.extract_tb(e.__traceback__)[-1]
    raise ConfigError(f"{spec}: get_config raised {type(e).__name__} at "
                      f"{os.path.relpath(frame.filename)}:{frame.lineno}: {_one_line(e)}") from None
  if not isinstance(config, ml_collections.ConfigDict):
    raise ConfigError(f"{spec}: get_config returned {type(config).__name__}, not a ConfigDict")
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
  """Splits argv into (flags dict, config overrides) — `--config.x=y` are overrides.

  `--name=value` and `--name value` both work; `-h` / `--help` set flags['help']."""
  flags, overrides = {}, []
  args = list(argv)
  while args:
    arg = args.pop(0)
    if arg in ("-h", "--help"):
      flags["help"] = "1"
      continue
    if not arg.startswith("--") or len(arg) == 2:
      raise ConfigError(f"expected --name=value or --name value, got {arg!r}")
    key, eq, value = arg[2:].partition("=")
    if not eq:
      if not args or args[0].startswith("--") or args[0] in ("-h",):
        raise ConfigError(f"--{key} needs a value: --{key}=VALUE or --{key} VALUE")
      value = args.pop(0)
    if key.startswith("config."):
      overrides.append((key[len("config."):], value))
    else:
      flags[key] = value
  return flags, overrides
