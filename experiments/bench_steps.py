"""Several configs' train steps timed side by side: each compiled as the trainer compiles it
(bench_train_step.build_compiled_step: the frozen groups' gradients skipped, the mesh, the
donation), then all timed in alternating rounds on random inputs of their shapes, so their
speeds compare on a machine whose speed drifts (a training run's logged throughput does
not, once other jobs share the cores).

    python experiments/bench_steps.py configs/video_transfer.py:mean_pool \\
        configs/video_transfer.py:st_adapter,seq_transformer [--rounds 3 --steps 10] \\
        [--json OUT.json]

Prints a line per round and config, then a table and one JSON line: for each config its
examples/s (the median over rounds; clips/s for a video model), steps/s per round (each
round starts one config later in the list), XLA's
GFLOP per step, trainable and total parameters and compile seconds. The models are freshly
initialised (no init_from, no image model run): the step's cost does not depend on the
weights.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
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
from vlx.train.optimizer import num_trainable  # noqa: E402


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("configs", nargs="+", help="path:variant of each config, e.g. "
                 "configs/video_transfer.py:mean_pool")
  p.add_argument("--rounds", type=int, default=3, help="rounds over every config")
  p.add_argument("--steps", type=int, default=10, help="timed steps per round and config")
  p.add_argument("--json", default="", help="also write the JSON summary to this file")
  args = p.parse_args(argv)
  if len(set(args.configs)) != len(args.configs):
    raise SystemExit(f"a config is named twice: {args.configs}")
  built, batches = {}, {}
  for spec in args.configs:
    config = timing_config(spec)
    built[spec] = b = build_compiled_step(config)
    b["batch_size"] = config.batch_size
    b["trainable"] = num_trainable(config.optimizer, b["state"].params)
    batches[spec] = jax.device_put(random_batch(config, config.model.text.vocab_size,
                                                np.random.default_rng(0)),
                                   b["batch_shardings"])
    print(f"{spec}: compiled in {b['compile_s']:.0f} s, {b['flops_xla'] / 1e9:.1f} GFLOP/step, "
          f"{b['trainable'] / 1e6:.2f}M of {b['num_params'] / 1e6:.2f}M trainable", flush=True)
  rates = {spec: [] for spec in args.configs}
  for r in range(args.rounds):
    n = r % len(args.configs)  # each round starts at another config: no fixed position
    for spec in args.configs[n:] + args.configs[:n]:
      rates[spec].append(time_steps(built[spec], batches[spec], args.steps))
      print(f"round {r}: {spec}: {rates[spec][-1]:.2f} steps/s", flush=True)
  results = {spec: dict(examples_per_s=statistics.median(rates[spec]) * b["batch_size"],
                        steps_per_s=rates[spec], batch=b["batch_size"],
                        gflop=b["flops_xla"] / 1e9, trainable=b["trainable"],
                        params=b["num_params"], compile_s=b["compile_s"])
             for spec, b in built.items()}
  print("\n| config | examples/s (median) | steps/s per round | GFLOP/step | trainable |\n"
        "|---|---|---|---|---|")
  for spec, r in results.items():
    print(f"| {spec} | {r['examples_per_s']:.0f} | "
          f"{' / '.join(f'{x:.2f}' for x in r['steps_per_s'])} | {r['gflop']:.1f} | "
          f"{r['trainable'] / 1e3:.0f}k of {r['params'] / 1e3:.0f}k |")
  summary = dict(rounds=args.rounds, steps=args.steps, devices=jax.device_count(),
                 configs=results)
  if args.json:
    with open(args.json, "w") as f:
      json.dump(summary, f, indent=1)
  print(json.dumps(summary))


if __name__ == "__main__":
  main()
