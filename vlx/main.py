"""Entry point: `python -m vlx.main --config=configs/clip.py:tiny --workdir=DIR [--config.x=y]`.

Trains and evaluates a config; a workdir that holds a checkpoint resumes from it.
Config problems print one line naming the problem and exit with status 2.
"""

from __future__ import annotations

import logging
import os
import sys

USAGE = ("usage: python -m vlx.main --config=configs/<family>.py[:<variant>] --workdir=DIR "
         "[--mode=train|eval] [--config.key=value ...]")


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  from vlx import config_lib  # pylint: disable=g-import-not-at-top
  try:
    flags, overrides = config_lib.parse_argv(argv)
    if "help" in flags or "config" not in flags or "workdir" not in flags:
      print(USAGE, file=sys.stderr)
      return 0 if "help" in flags else 2
    unknown = set(flags) - {"config", "workdir", "mode"}
    if unknown:
      raise config_lib.ConfigError(f"unknown flag --{sorted(unknown)[0]}")
    config = config_lib.load_config_file(flags["config"])
    config_lib.apply_overrides(config, overrides)
  except config_lib.ConfigError as e:
    print(f"vlx: config error: {e}", file=sys.stderr)
    return 2

  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                      stream=sys.stderr)
  for noisy in ("absl", "jax._src", "orbax", "tensorflow_datasets", "grain"):
    logging.getLogger(noisy).setLevel(logging.WARNING)

  from vlx.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  mesh_lib.maybe_initialize_distributed(config.distributed)
  from vlx.train import trainer  # pylint: disable=g-import-not-at-top
  try:
    final = trainer.train(config, flags["workdir"], mode=flags.get("mode", "train"))
  except trainer.NonFiniteLossError as e:
    print(f"vlx: stopped: {e}", file=sys.stderr)
    return 3
  except (mesh_lib.ShardingError, KeyError, ValueError) as e:
    if isinstance(e, KeyError) and not str(e).startswith("'unknown"):
      raise
    print(f"vlx: error: {e}", file=sys.stderr)
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
