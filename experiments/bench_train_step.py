"""Times vlx's real train step at a fixed benchmark shape: examples/s and MFU.

The step is built exactly as vlx/train/trainer.py builds it (build_model, build_task,
make_optimizer, create_state, then trainer.compile_train_step: the frozen groups' gradients
skipped, jit with the same shardings and donation, AOT lower/compile); only the input is
random synthetic data.

Benchmark shape (CLIP): image 64x64, patch 8, ViT 256 wide x 6 layers x 4 heads,
MLP 4x; text context 32, vocab 4096, 256 wide x 6 layers x 4 heads; embedding 256;
batch 64; AdamW; fp32; CLIP loss. `--shape vivit_tiny`: configs/vivit.py:tiny as it trains
(8 frames of 32 px, factorised ViViT 128 wide: 2 spatial layers over each frame's 8x8
patches, 2 temporal layers over the 8 frame tokens; its text tower; batch 64), reported as
clips/s.

MFU = achieved FLOP/s (compiled.cost_analysis() FLOPs per step / step time; the
analytic model count under --scan, whose loop body XLA counts once) divided
by the matmul peak measured on this machine with jnp.dot on square matrices in the
compute dtype (sharded over every device of the mesh, so it is the aggregate peak).

    python experiments/bench_train_step.py [--steps 20] [--batch 64] [--dtype bfloat16]
        [--scan] [--remat dots] [--mesh_data -1 --mesh_fsdp 1 --mesh_tensor 1]

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from vlx import runtime  # noqa: E402  (imports nothing heavy)
if __name__ == "__main__":  # before JAX is imported: see vlx/runtime.py
  runtime.reexec_with_hugepage_malloc()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from vlx.parallel import mesh as mesh_lib  # noqa: E402
from vlx import build  # noqa: E402
from vlx.train import trainer  # noqa: E402
from vlx.train.optimizer import make_optimizer  # noqa: E402
from vlx.train.task import build_task  # noqa: E402

DTYPE_NAMES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16"}


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--shape", default="cpu", choices=["cpu", "b16", "vivit_tiny"],
                 help="cpu: the small CPU shape above; b16: ViT-B/16 CLIP (224 px, text 77, "
                      "vocab 49408, embedding 512), the performance issue's GPU shape; "
                      "vivit_tiny: configs/vivit.py:tiny's video-text model (clips/s)")
  p.add_argument("--batch", type=int, default=0, help="global batch size (0: 64 cpu, 256 b16)")
  p.add_argument("--steps", type=int, default=20, help="timed steps")
  p.add_argument("--warmup", type=int, default=2, help="untimed steps after compilation")
  p.add_argument("--time_budget_s", type=float, default=45.0,
                 help="stop timing after this many seconds (at least one chunk is timed)")
  p.add_argument("--chunk", type=int, default=5, help="steps dispatched between syncs")
  p.add_argument("--dtype", default="", choices=[""] + sorted(DTYPE_NAMES),
                 help="compute dtype, params stay fp32 (default: float32 cpu, bfloat16 b16)")
  p.add_argument("--scan", action="store_true", help="nn.scan over transformer layers")
  p.add_argument("--remat", default="none", choices=["none", "full", "dots", "dots_all"])
  p.add_argument("--mesh_data", type=int, default=-1)
  p.add_argument("--mesh_fsdp", type=int, default=1)
  p.add_argument("--mesh_tensor", type=int, default=1)
  p.add_argument("--peak_sizes", default="",
                 help="comma-separated matmul sizes for the peak (default: 1024,2048 on CPU, "
                      "+4096,8192 on accelerators)")
  p.add_argument("--seed", type=int, default=0)
  return p.parse_args(argv)


def bench_config(args):
  """configs/clip.py:tiny (or :b16) with the benchmark's model fields overridden."""
  from vlx import config_lib  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  shape = getattr(args, "shape", "cpu")
  if shape == "vivit_tiny":
    c = config_lib.load_config_file(os.path.join(root, "configs", "vivit.py") + ":tiny")
    with c.unlocked():
      c.seed, c.accum_steps = args.seed, 1
      c.batch_size = args.batch or c.batch_size
      c.model.dtype = DTYPE_NAMES[args.dtype or "float32"]
      c.mesh.update(dict(data=args.mesh_data, fsdp=args.mesh_fsdp, tensor=args.mesh_tensor))
      c.model.text.vocab_size = 256  # the synthetic videos' tokenizer
      for tower in (c.model.video, c.model.text):
        tower.update(dict(scan=args.scan, remat=args.remat))
    return c
  b16 = shape == "b16"
  c = config_lib.load_config_file(os.path.join(root, "configs", "clip.py") +
                                  (":b16" if b16 else ":tiny"))
  dtype = args.dtype or ("bfloat16" if b16 else "float32")
  with c.unlocked():
    c.seed = args.seed
    c.batch_size = args.batch or (256 if b16 else 64)
    c.accum_steps = 1
    c.model.dtype = DTYPE_NAMES[dtype]
    c.mesh.update(dict(data=args.mesh_data, fsdp=args.mesh_fsdp, tensor=args.mesh_tensor))
    c.optimizer.name = "adamw"
    if b16:  # open_clip's ViT-B-16 (its text tower: 77 tokens over a 49,408-word vocabulary)
      c.data.image_size, c.data.max_len = 224, 77
      c.model.text.update(dict(vocab_size=49408, max_len=77))
      for tower in (c.model.image, c.model.text):
        tower.update(dict(scan=args.scan, remat=args.remat))
      return c
    c.data.image_size = 64
    c.data.max_len = 32
    c.model.embed_dim = 256
    # The benchmark shape has a plain patch embedding (the tiny recipe's conv stem and its
    # grayscale curriculum are training aids, not part of the shape compared with open_clip).
    c.model.image.update(dict(patch_size=8, width=256, depth=6, num_heads=4, mlp_ratio=4.0,
                              stem="patch", scan=args.scan, remat=args.remat))
    c.curriculum = {}
    c.model.text.update(dict(width=256, depth=6, num_heads=4, mlp_ratio=4.0, vocab_size=4096,
                             max_len=32, scan=args.scan, remat=args.remat))
  return c


def analytic_flops(config) -> float:
  """Model FLOPs of one training step (fwd + bwd = 3x fwd; matmuls and attention only)."""
  b = config.batch_size
  video = "video" in config.model
  img, txt = (config.model.video if video else config.model.image), config.model.text
  ctx = config.data.max_len

  def tower(tokens, width, depth, mlp_ratio):
    mlp = int(width * mlp_ratio)
    per_token_layer = 2 * (4 * width * width + 2 * width * mlp)   # qkv + out, mlp in + out
    per_token_layer += 2 * 2 * tokens * width                      # q.k^T and attn.v
    return b * tokens * depth * per_token_layer

  n_patch = (config.data.image_size // img.patch_size) ** 2
  depth_in, steps = 1, 1
  if video:  # one token per tubelet (tubelet frames x patch x patch)
    depth_in = img.tubelet
    steps = config.data.num_frames // img.tubelet
  if video and img.get("encoder") == "factorised":
    # A spatial encoder over each time step's patches, then a temporal one over the steps.
    fwd = steps * tower(n_patch, img.width, img.depth, img.mlp_ratio)
    fwd += tower(steps, img.width, img.temporal_depth, img.mlp_ratio)
  else:  # an image ViT, or the joint ViViT over every step's patches at once
    fwd = tower(n_patch * steps, img.width, img.depth, img.mlp_ratio)
  n_patch *= steps
  fwd += b * n_patch * 2 * (depth_in * img.patch_size ** 2 * 3) * img.width  # patch embedding
  fwd += tower(ctx, txt.width, txt.depth, txt.mlp_ratio)
  fwd += b * 2 * (img.width + txt.width) * config.model.embed_dim    # projections
  fwd += 2 * b * b * config.model.embed_dim                          # logits
  return 3.0 * fwd


def _cost(compiled):
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return dict(cost or {})


def measure_matmul_peak(devices, sizes, dtype, repeats=5):
  """Best FLOP/s of jnp.dot on square [n, n] matrices, one per device, all devices at once."""
  nd = len(devices)
  mesh = jax.make_mesh((nd,), ("d",), devices=devices)
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("d"))
  f = jax.jit(jax.vmap(jnp.dot), in_shardings=(sharding, sharding), out_shardings=sharding)
  best, per_size = 0.0, {}
  for n in sizes:
    k1, k2 = jax.random.split(jax.random.key(n))
    a = jax.device_put(jax.random.normal(k1, (nd, n, n), jnp.float32).astype(dtype), sharding)
    b = jax.device_put(jax.random.normal(k2, (nd, n, n), jnp.float32).astype(dtype), sharding)
    f(a, b).block_until_ready()  # compile + warm up
    f(a, b).block_until_ready()
    # Enough back-to-back calls per timing that small matmuls on fast devices are not
    # dominated by dispatch latency.
    t = time.perf_counter()
    f(a, b).block_until_ready()
    once = time.perf_counter() - t
    inner = max(1, min(50, int(0.05 / max(once, 1e-6))))
    times = []
    for _ in range(repeats):
      t = time.perf_counter()
      for _ in range(inner):
        out = f(a, b)
      out.block_until_ready()
      times.append((time.perf_counter() - t) / inner)
    flops = nd * 2.0 * n ** 3 / min(times)
    per_size[n] = flops
    best = max(best, flops)
  return best, per_size


def random_batch(config, vocab, rng):
  """A batch of the config's shapes (build.dummy_batch): pixels uniform in [-1, 1], captions
  of random ids below `vocab`, a frame mask all ones."""
  out = {}
  for key, zeros in build.dummy_batch(config).items():
    if np.issubdtype(zeros.dtype, np.floating):
      out[key] = rng.uniform(-1, 1, zeros.shape).astype(zeros.dtype)
    elif key == "text":
      b, l = zeros.shape
      text = rng.integers(3, vocab, (b, l)).astype(zeros.dtype)
      # A realistic caption: EOS (id 2) at a random position, padding (id 0) after it.
      lengths = rng.integers(l // 4, l, b)
      text = np.where(np.arange(l)[None] < lengths[:, None], text, 0)
      text[np.arange(b), lengths] = 2
      out[key] = text
    else:
      out[key] = np.ones_like(zeros) if zeros.dtype == bool else zeros
  return out


def build_compiled_step(config, skip_frozen: bool = True):
  """The trainer's exact construction (vlx/train/trainer.py: train), AOT-compiled
  (`skip_frozen=False`: the frozen groups' weight gradients computed and thrown away, as
  before the step learned to skip them).

  Returns a dict: compiled, state, mesh, batch_shardings, num_params, compile_s, memory,
  flops_xla (whole step, all devices)."""
  mesh = mesh_lib.make_mesh(config.mesh)
  rules = mesh_lib.rules_from_config(config.sharding)
  mesh_lib.check_rules(rules, mesh)
  if config.batch_size % mesh_lib.batch_axis_size(mesh):
    raise SystemExit(f"batch {config.batch_size} not divisible by the "
                     f"{mesh_lib.batch_axis_size(mesh)} batch shards of mesh {dict(mesh.shape)}")
  model = build.build_model(config)
  task = build_task(config, model)
  boxed = build.abstract_params(config, model, mesh, rules)
  tx, schedule = make_optimizer(config.optimizer, mesh_lib.unbox(boxed), config.total_steps,
                                param_bounds=task.param_bounds)
  state, shardings = trainer.create_state(config, model, tx, mesh, rules, boxed, task)
  num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params))
  compiled, batch_shardings, compile_s = trainer.compile_train_step(
      config, task, tx, schedule, mesh, rules, state, shardings, skip_frozen=skip_frozen)
  # cost_analysis of an SPMD-partitioned executable is per device (one partition's HLO).
  flops_per_device = float(_cost(compiled).get("flops", 0.0))
  return dict(compiled=compiled, state=state, mesh=mesh, batch_shardings=batch_shardings,
              num_params=num_params, compile_s=compile_s,
              memory=trainer._memory_report(compiled),  # pylint: disable=protected-access
              flops_xla=flops_per_device * mesh.size, flops_per_device=flops_per_device)


def timing_config(spec: str):
  """The config `path:variant` for timing its step: random weights, so no init_from, image
  model run or init_map (the step's cost does not depend on the weights)."""
  from vlx import config_lib  # pylint: disable=g-import-not-at-top
  config = config_lib.load_config_file(spec)
  with config.unlocked():
    config.init_from, config.init_from_run, config.init_map = "", "", ""
  return config


def time_steps(built, batch, steps: int) -> float:
  """Steps/s of `steps` calls (after one untimed call), the state carried through."""
  compiled, state = built["compiled"], built["state"]
  with jax.set_mesh(built["mesh"]):
    state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics)
    t = time.perf_counter()
    for _ in range(steps):
      state, metrics = compiled(state, batch)
    jax.block_until_ready((state, metrics))
    elapsed = time.perf_counter() - t
  built["state"] = state
  return steps / elapsed


def main(argv=None):
  args = parse_args(argv)
  config = bench_config(args)
  devices = jax.devices()
  dev0 = devices[0]
  device_name = f"{dev0.platform}:{getattr(dev0, 'device_kind', '')}"
  accel = dev0.platform != "cpu"
  dtype = jnp.bfloat16 if config.model.dtype == "bfloat16" else jnp.float32
  video = "video" in config.model
  unit = "clips/s" if video else "examples/s"

  built = build_compiled_step(config)
  compiled, state, mesh = built["compiled"], built["state"], built["mesh"]
  batch_shardings, num_params = built["batch_shardings"], built["num_params"]
  compile_s, memory = built["compile_s"], built["memory"]
  n_dev = mesh.size
  cost_flops_per_device = built["flops_per_device"]
  flops_cost = built["flops_xla"]
  flops_model = analytic_flops(config)
  # XLA's cost analysis counts a while-loop body once, not once per trip: under nn.scan it
  # sees one layer of each tower. MFU then falls back to the analytic count.
  flops_source = "analytic (scan: XLA counts loop bodies once)" if args.scan else "xla"
  flops_step = flops_model if args.scan else flops_cost

  # ---- Synthetic input, warmup, timing ---------------------------------------------
  rng = np.random.default_rng(args.seed)
  batches = [jax.device_put(random_batch(config, config.model.text.vocab_size, rng),
                            batch_shardings) for _ in range(2)]
  metrics = None
  with jax.set_mesh(mesh):
    for i in range(max(args.warmup, 1)):
      state, metrics = compiled(state, batches[i % 2])
    jax.block_until_ready((state, metrics))
    first_loss = float(jax.device_get(metrics["train/loss"]))
    timed_steps, timed_s = 0, 0.0
    while timed_steps < args.steps:
      n = min(args.chunk, args.steps - timed_steps)
      t = time.perf_counter()
      for i in range(n):
        state, metrics = compiled(state, batches[i % 2])
      jax.block_until_ready((state, metrics))
      timed_s += time.perf_counter() - t
      timed_steps += n
      if timed_s > args.time_budget_s:
        break
    last_loss = float(jax.device_get(metrics["train/loss"]))
  step_s = timed_s / timed_steps

  # ---- Matmul peak -----------------------------------------------------------------------
  sizes = ([int(s) for s in args.peak_sizes.split(",") if s] if args.peak_sizes else
           ([1024, 2048, 4096, 8192] if accel else [1024, 2048]))
  peak, per_size = measure_matmul_peak(list(mesh.devices.flat), sizes, dtype)

  achieved = flops_step / step_s
  result = {
      "examples_per_s": round(config.batch_size / step_s, 2),
      "unit": unit,
      "step_ms": round(step_s * 1e3, 3),
      "mfu": round(achieved / peak, 4),
      "mfu_analytic": round(flops_model / step_s / peak, 4),
      "flops_per_step": flops_step,
      "flops_per_step_xla": flops_cost,
      "flops_source": flops_source,
      "flops_per_step_analytic": flops_model,
      "achieved_gflops": round(achieved / 1e9, 2),
      "peak_gflops": round(peak / 1e9, 2),
      "peak_gflops_by_size": {str(k): round(v / 1e9, 2) for k, v in per_size.items()},
      "timed_steps": timed_steps,
      "batch": config.batch_size,
      "dtype": config.model.dtype,
      "scan": bool(args.scan),
      "remat": args.remat,
      "mesh": {k: int(v) for k, v in mesh.shape.items()},
      "num_devices": n_dev,
      "num_params": num_params,
      "compile_s": round(compile_s, 2),
      "memory_mib": memory,
      "loss_first": first_loss,
      "loss_last": last_loss,
      "jax_version": jax.__version__,
      "device": device_name,
      "host": platform.node(),
      "hugepage_malloc": runtime.hugepage_malloc_active(),
  }

  rows = [
      ("device", f"{device_name} x{n_dev}  mesh {result['mesh']}"),
      ("jax", f"{jax.__version__}; huge-page malloc "
              f"{'on' if runtime.hugepage_malloc_active() else 'off'} (vlx/runtime.py)"),
      ("model", (f"ViViT {config.model.video.width}x{config.model.video.depth} "
                 f"({config.data.num_frames}x{config.data.image_size}px, tubelet "
                 f"{config.model.video.tubelet}x{config.model.video.patch_size}) + text "
                 f"{config.model.text.width}x{config.model.text.depth}" if video else
                 "CLIP ViT 256x6 (64px/8) + text 256x6 (ctx 32, vocab 4096)")
                + f", {num_params / 1e6:.2f}M params"),
      ("batch / dtype", f"{config.batch_size} / {config.model.dtype}"
                        f"  scan={args.scan} remat={args.remat}"),
      ("compile", f"{compile_s:.1f} s; memory/device {memory}"),
      ("timed steps", f"{timed_steps} (+{max(args.warmup, 1)} warmup), loss "
                      f"{first_loss:.4f} -> {last_loss:.4f}"),
      ("step time", f"{step_s * 1e3:.1f} ms"),
      (unit, f"{result['examples_per_s']:.1f}"),
      ("FLOPs/step (XLA)", f"{flops_cost / 1e9:.2f} GFLOP "
                           f"({cost_flops_per_device / 1e9:.2f} per device)"),
      ("FLOPs/step (analytic)", f"{flops_model / 1e9:.2f} GFLOP "
                                f"(XLA/analytic = {flops_cost / flops_model:.3f})"),
      ("achieved", f"{achieved / 1e9:.1f} GFLOP/s"),
      ("matmul peak", f"{peak / 1e9:.1f} GFLOP/s  (" + ", ".join(
          f"{k}: {v / 1e9:.1f}" for k, v in per_size.items()) + ")"),
      ("MFU", f"{result['mfu'] * 100:.1f}% ({flops_source} FLOPs); "
              f"{result['mfu_analytic'] * 100:.1f}% with analytic model FLOPs"),
  ]
  w = max(len(k) for k, _ in rows)
  print("-" * 72)
  for k, v in rows:
    print(f"{k:<{w}}  {v}")
  print("-" * 72)
  sys.stdout.flush()
  print(json.dumps(result))
  return result


if __name__ == "__main__":
  main()
