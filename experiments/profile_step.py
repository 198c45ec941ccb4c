"""Where the benchmark train step's time goes: a JAX profiler trace, summarized per op.

Builds the step exactly as `bench_train_step.py` does (same flags), traces a few steps
with `jax.profiler`, and prints
  * wall time, CPU time and minor page faults per step (getrusage), which is how the
    per-step re-faulting of XLA:CPU's temporaries was found (see vlx/runtime.py);
  * the ops that took longest, summed over the traced steps, each with the model code it
    came from (the HLO op's `op_name` metadata, layer numbers folded) and fwd/bwd;
  * the same time grouped by part of the model (attention projections, attention core,
    MLP, layer norms, optimizer, ...), split into matmuls and everything else.
Op times are per-thread event durations: with several ops in flight they add up to more
than the wall time. The trace itself stays in --trace_dir for TensorBoard / Perfetto.

    python experiments/profile_step.py [--steps 3] [--top 25] [bench_train_step flags]
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import resource
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from vlx import runtime  # noqa: E402  (imports nothing heavy)
if __name__ == "__main__":  # before JAX is imported: see vlx/runtime.py
  runtime.reexec_with_hugepage_malloc()

import jax  # noqa: E402
import numpy as np  # noqa: E402

import bench_train_step as bts  # noqa: E402

_PARTS = (  # (regex on the op's source, part name); first match wins
    (r"attn/vmap|dot_product_attention", "attention core"),
    (r"attn/(query|key|value|out)|attn/qkv", "attention projections"),
    (r"mlp/fc", "MLP matmuls"),
    (r"mlp/", "MLP activation"),
    (r"/ln_|ln_final|LayerNorm", "layer norms"),
    (r"stem|embedding|pos_embed", "embeddings"),
    (r"encoder/layer_N/add", "residual adds"),
    (r"loss|logits|log_softmax", "loss"),
    (r"state\.params|state\.opt_state|optax|adam|global_norm|_where|select_n|clip", "optimizer"),
)


def part_of(source: str) -> str:
  for pattern, name in _PARTS:
    if re.search(pattern, source):
      return name
  return "other"


def op_sources(hlo_text: str):
  """HLO instruction name -> (shape, op_name metadata) from the compiled module's text."""
  out = {}
  for m in re.finditer(r"^\s*%?([\w.\-]+) = (\S+) .*?op_name=\"([^\"]+)\"", hlo_text, re.M):
    out[m.group(1)] = (m.group(2), m.group(3))
  return out


def op_events(trace_dir: str):
  """(name, duration ns) of every XLA op event in the trace (executor bookkeeping dropped)."""
  from jax.profiler import ProfileData  # pylint: disable=g-import-not-at-top
  files = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)
  if not files:
    raise SystemExit(f"no trace written under {trace_dir}")
  skip = ("ThunkExecutor", "Threadpool", "SlinkyThreadPool", "end:")
  newest = max(files, key=os.path.getmtime)  # a reused --trace_dir keeps older traces
  for plane in ProfileData.from_file(newest).planes:
    for line in plane.lines:
      if line.name == "python":
        continue
      for ev in line.events:
        if not ev.name.startswith(skip):
          yield ev.name, ev.duration_ns


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, add_help=False,
                              formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog="Every other flag is bench_train_step.py's (below).")
  p.add_argument("-h", "--help", action="store_true", help="this help, then bench_train_step's")
  p.add_argument("--steps", type=int, default=3, help="traced steps")
  p.add_argument("--top", type=int, default=25, help="ops listed")
  p.add_argument("--trace_dir", default="", help="keep the trace here (default: a temp dir)")
  args, rest = p.parse_known_args(argv)
  if args.help:
    p.print_help()
    print("\nbench_train_step.py flags:")
    bts.parse_args(["--help"])  # prints its options and exits 0
  config = bts.bench_config(bts.parse_args(rest))
  built = bts.build_compiled_step(config)
  compiled, state = built["compiled"], built["state"]
  batch = jax.device_put(bts.random_batch(config, config.model.text.vocab_size,
                                          np.random.default_rng(0)), built["batch_shardings"])
  with jax.set_mesh(built["mesh"]):
    for _ in range(2):  # warm up
      state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics)
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(args.steps):
      state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics)
    wall = (time.perf_counter() - t0) / args.steps
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    trace_dir = args.trace_dir or tempfile.mkdtemp(prefix="vlx_trace_")
    jax.profiler.start_trace(trace_dir)
    for _ in range(args.steps):
      state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics)
    jax.profiler.stop_trace()

  n = args.steps
  print(f"step {wall * 1e3:.0f} ms wall; per step: "
        f"user {(r1.ru_utime - r0.ru_utime) / n:.2f} s, sys {(r1.ru_stime - r0.ru_stime) / n:.2f} s, "
        f"{(r1.ru_minflt - r0.ru_minflt) / n:,.0f} minor page faults")
  sources = op_sources(compiled.as_text())
  per_op = collections.Counter()
  for name, ns in op_events(trace_dir):
    per_op[name] += ns
  if not per_op:
    raise SystemExit("the trace has no per-op events (XLA:CPU records them since JAX 0.5)")
  total = sum(per_op.values())
  print(f"op time {total / n / 1e6:.0f} ms per step, summed over threads\n")
  print(f"{'ms/step':>8}  {'op':<28} {'pass':<4} source")
  for name, ns in per_op.most_common(args.top):
    shape, source = sources.get(name, ("", "?"))
    pass_ = "bwd" if "transpose(" in source else "fwd"
    source = re.sub(r"layer_\d+", "layer_N", re.sub(r"^jit\([^)]*\)/", "", source))
    source = re.sub(r"(transpose\()?jvp\((\w+)\)\)?/", "", source)
    print(f"{ns / n / 1e6:8.1f}  {name:<28} {pass_:<4} {shape} {source[-90:]}")
  parts = collections.Counter()
  for name, ns in per_op.items():
    source = re.sub(r"layer_\d+", "layer_N", sources.get(name, ("", ""))[1])
    kind = "matmul" if name.startswith(("ynn", "dot", "onednn", "xnn")) else "other"
    parts[(part_of(source), kind)] += ns
  print(f"\n{'ms/step':>8}  {'share':>5}  part")
  for (part, kind), ns in parts.most_common():
    print(f"{ns / n / 1e6:8.1f}  {ns / total:5.1%}  {part} ({kind})")
  if not args.trace_dir:
    shutil.rmtree(trace_dir, ignore_errors=True)


if __name__ == "__main__":
  main()
