"""Entry point: `python -m vlx.main --config=configs/clip.py:tiny --workdir=DIR [--config.x=y]`.

Trains and evaluates a config; a workdir that holds a checkpoint resumes from it.
Config problems print one line naming the problem and exit with status 2.
"""

from __future__ import annotations

import glob
import logging
import os
import sys

USAGE = ("usage: python -m vlx.main --config=configs/<family>.py[:<variant>] --workdir=DIR "
         "[--mode=train|eval] [--config.key=value ...]")

FLAGS_HELP = """
Trains (and evaluates) a config; a workdir that holds a checkpoint resumes from it.

flags (--name=value or --name value):
  --config FILE[:VARIANT]  a config file and its variant words, e.g. configs/clip.py:b16,smoke
  --workdir DIR            checkpoints, metrics.jsonl, tensorboard/ and config.json go here
  --mode train|eval        eval: evaluate the latest checkpoint (or init_from) only
  --config.KEY VALUE       override any config key, typed like its default
                           (e.g. --config.total_steps=100 --config.model.dtype=bf16)
  -h, --help               this help; with --config, that config's variants and keys

exit status: 0 done, 2 a bad config or input (one line, no traceback), 3 a non-finite loss."""


def _configs_dir() -> str:
  return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def general_help() -> str:
  lines = [USAGE, FLAGS_HELP, "", "configs (--config=FILE --help lists one's variants and keys):"]
  for path in sorted(glob.glob(os.path.join(_configs_dir(), "*.py"))):
    with open(path) as f:
      first = f.read().lstrip().lstrip('"').strip().splitlines()
    title = first[0].strip() if first else ""
    lines.append(f"  configs/{os.path.basename(path):14s} {title}")
  return "\n".join(lines)


def config_help(spec: str) -> str:
  """A config file's own documentation, its variant words and its top-level keys."""
  from vlx import config_lib, variant  # pylint: disable=g-import-not-at-top
  path, _, arg = spec.partition(":")
  module = config_lib.load_config_module(path)
  try:
    module.get_config("--help")  # no config takes this word: its refusal lists the valid ones
    words = "(not declared)"
  except variant.UnknownVariantError as e:
    words = ", ".join(e.valid)
  except Exception:  # pylint: disable=broad-except
    words = "(not declared)"
  config = config_lib.load_config_file(spec if arg else path)
  keys = []
  for key, value in config.items():
    if hasattr(value, "keys"):
      keys.append(f"  {key}.{{{', '.join(value.keys())}}}")
    else:
      keys.append(f"  {key} = {value!r}")
  return "\n".join([USAGE, "", f"{path}:", (module.__doc__ or "").strip(), "",
                    f"variant words (comma-separated after ':'): {words}", "",
                    f"top-level keys of {spec if arg else path} (override with --config.KEY=VALUE):",
                    *keys])


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  from vlx import config_checks, config_lib  # pylint: disable=g-import-not-at-top
  try:
    flags, overrides = config_lib.parse_argv(argv)
    if "help" in flags:
      print(config_help(flags["config"]) if "config" in flags else general_help())
      return 0
    if "config" not in flags or "workdir" not in flags:
      missing = "--config" if "config" not in flags else "--workdir"
      print(f"vlx: {missing} is required\n{USAGE}\n(--help for more)", file=sys.stderr)
      return 2
    unknown = set(flags) - {"config", "workdir", "mode"}
    if unknown:
      raise config_lib.ConfigError(f"unknown flag --{sorted(unknown)[0]}; "
                                   "known: --config, --workdir, --mode, --config.KEY, --help")
    config = config_lib.load_config_file(flags["config"])
    config_lib.apply_overrides(config, overrides)
    config_checks.check(config)
  except config_lib.ConfigError as e:
    print(f"vlx: config error: {e}", file=sys.stderr)
    return 2

  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                      stream=sys.stderr)
  for noisy in ("absl", "jax._src", "orbax", "tensorflow_datasets", "grain"):
    logging.getLogger(noisy).setLevel(logging.WARNING)

  from vlx.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  mesh_lib.maybe_initialize_distributed(config.distributed)
  from vlx import build  # pylint: disable=g-import-not-at-top
  from vlx.train import trainer  # pylint: disable=g-import-not-at-top
  try:
    try:
      build.import_components(config)  # config.imports: one's own datasets, ops, models, ...
    except ImportError as e:
      print(f"vlx: config error: {e}", file=sys.stderr)
      return 2
    try:
      config_checks.check_data(config)
    except config_lib.ConfigError as e:
      print(f"vlx: config error: {e}", file=sys.stderr)
      return 2
    from vlx.train import init_run  # pylint: disable=g-import-not-at-top
    init_run.ensure(config, flags["workdir"], flags.get("mode", "train"))
    final = trainer.train(config, flags["workdir"], mode=flags.get("mode", "train"))
  except trainer.NonFiniteLossError as e:
    print(f"vlx: stopped: {e}", file=sys.stderr)
    return 3
  except (mesh_lib.ShardingError, KeyError, ValueError) as e:
    # A registry's unknown-name KeyError is the user's typo (one line); any other KeyError is
    # a bug and keeps its traceback. str(KeyError) quotes its message: print the message itself.
    message = e.args[0] if isinstance(e, KeyError) and e.args else e
    if isinstance(e, KeyError) and not str(message).startswith("unknown "):
      raise
    print(f"vlx: error: {message}", file=sys.stderr)
    return 2
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_index() == 0:
    print(trainer.summarize(final, flags["workdir"]))
  return 0


if __name__ == "__main__":
  from vlx import runtime  # pylint: disable=g-import-not-at-top
  runtime.reexec_with_hugepage_malloc()
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  sys.exit(main())
