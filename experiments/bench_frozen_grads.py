"""What skipping a locked group's weight gradients buys: the train step of any config with
frozen parameter groups (LiT's tower, the adapted video paradigms' backbone), compiled twice
as the trainer compiles it, once computing no gradient for the frozen leaves (what vlx does:
vlx/train/step.py) and once computing and discarding them (the optimizer's lr_mult 0 alone),
timed in alternating rounds on random inputs of the config's shapes.

    python experiments/bench_frozen_grads.py \\
        --config configs/video_transfer.py:st_adapter [--rounds 3 --steps 20]
    # LiT's locked image tower on the tiny CLIP:
    python experiments/bench_frozen_grads.py --config configs/clip.py:tiny \\
        --lock 'img/.*,img_proj/.*'

Prints a line per round and a JSON summary (steps/s of each, the ratio per round). The
model is freshly initialised (no init_from, no image model run): the step's cost does not
depend on the weights.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from vlx import runtime  # noqa: E402  (imports nothing heavy)
if __name__ == "__main__":  # before JAX is imported: see vlx/runtime.py
  runtime.reexec_with_hugepage_malloc()

import jax  # noqa: E402
import numpy as np  # noqa: E402

from bench_train_step import (build_compiled_step, random_batch, time_steps,  # noqa: E402
                              timing_config)
from vlx.train.optimizer import frozen_mask, num_trainable  # noqa: E402


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--config", required=True, help="path:variant, e.g. "
                 "configs/video_transfer.py:st_adapter")
  p.add_argument("--lock", default="", help="comma-separated param regexes to lock (lr 0) "
                 "before the config's own groups, e.g. 'img/.*,img_proj/.*' (LiT)")
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--steps", type=int, default=20, help="timed steps per round and variant")
  args = p.parse_args(argv)
  config = timing_config(args.config)
  with config.unlocked():
    locked = tuple((regex, 0.0) for regex in args.lock.split(",") if regex)
    config.optimizer.param_groups = locked + tuple(config.optimizer.param_groups)
  if not any(mult == 0 for _, mult in config.optimizer.param_groups):
    raise SystemExit(f"{args.config} locks no parameter group: name some with --lock")
  built = {skip: build_compiled_step(config, skip_frozen=skip) for skip in (True, False)}
  params = built[True]["state"].params
  frozen = sum(jax.tree.leaves(frozen_mask(config.optimizer, params)))
  gflop = {skip: b["flops_xla"] / 1e9 for skip, b in built.items()}
  print(f"{args.config}: {num_trainable(config.optimizer, params) / 1e6:.2f}M trainable; "
        f"{frozen} frozen leaves; {gflop[True]:.1f} GFLOP/step skipping their gradients, "
        f"{gflop[False]:.1f} computing them (XLA's count)")
  batch = jax.device_put(random_batch(config, config.model.text.vocab_size,
                                      np.random.default_rng(0)),
                         built[True]["batch_shardings"])
  rounds = []
  for r in range(args.rounds):
    skip = time_steps(built[True], batch, args.steps)
    full = time_steps(built[False], batch, args.steps)
    rounds.append(dict(skipping=skip, computing=full, ratio=skip / full))
    print(f"round {r}: skipping frozen gradients {skip:.2f} steps/s, computing them "
          f"{full:.2f} steps/s: {skip / full:.2f}x")
  ratios = sorted(x["ratio"] for x in rounds)
  print(json.dumps(dict(config=args.config, batch=config.batch_size, gflop_skipping=gflop[True],
                        gflop_computing=gflop[False], rounds=rounds,
                        median_ratio=ratios[len(ratios) // 2])))


if __name__ == "__main__":
  main()
