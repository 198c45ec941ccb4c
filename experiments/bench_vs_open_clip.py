"""vlx's train step against open_clip's: same shape, threads, batch, AdamW and loss.

Two modes (`--mode`), measuring different things:

  separate  (how a user runs them) each side in its own fresh process, alone on the
            machine: rounds of vlx, open_clip, vlx, open_clip, ... run one after the
            other, never two at once. Each process builds its side, runs `--warmup`
            untimed steps (compilation included), then times `--steps` steps dispatched
            back to back and synchronized once at the end, as a training loop runs them.
            Reported: per side the median, min and max examples/s over the rounds; per
            round the ratio vlx / open_clip of that round's pair; and the median of those
            pair ratios (the headline). The parent process imports neither framework.
  inprocess (the default; the older figure) both sides in ONE process, alternating rounds
            with an untimed settle step per side per round (see `time_steps`), each side's
            figure its best round. It isolates the steps from process start-up and
            allocator state, but both frameworks share one heap and thread pools, which a
            training run never does: its ratio is not what a user sees.
  docs/performance.md says which figure comes from which mode.

Installs nothing: open_clip and torch come from the `torch` extra
(`pip install -e ".[torch]"`). Both sides run the same model, batch, AdamW and softmax CLIP
loss (open_clip's `ClipLoss`). Differences that remain, each in open_clip's favour or neutral:
vlx's step also clips the global gradient norm, runs its LR schedule and NaN guard, and uses
tanh-GELU (open_clip: erf-GELU); open_clip decays every parameter. FLOPs are the analytic
model count of `bench_train_step.analytic_flops`; the fraction (in-process mode only) is of the
matmul peak JAX measures on this machine in the compute dtype
(`bench_train_step.measure_matmul_peak`).

Shapes (`--shape`):
  cpu  CLIP ViT 256x6 on 64px/8 patches + text 256x6, context 32, vocab 4096, embedding
       256; batch 64; fp32; torch with as many threads as XLA.
  b16  open_clip's ViT-B-16 architecture (224 px, text context 77, vocab 49408, embedding 512); batch
       256; bf16 compute (torch autocast, vlx's bfloat16 policy), fp32 parameters; on a GPU
       open_clip runs eager and, with `--torch_compile`, also under `torch.compile`, both with
       fused AdamW. Only a lent GPU gives the figures the performance issue asks for; on a
       CPU the shape runs (slowly) as a check of the script.

    python experiments/bench_vs_open_clip.py [--mode inprocess|separate] [--rounds 3]
        [--steps 5] [--warmup 2] [--shape cpu|b16] [--batch N] [--torch_compile]

    # what a user sees (docs/performance.md): 3 alternating pairs, each side alone
    python experiments/bench_vs_open_clip.py --mode separate --rounds 3 --steps 20

Like `python -m vlx.main`, the script re-executes itself once with huge-page malloc
(vlx/runtime.py), which both sides then share; `VLX_HUGEPAGE_MALLOC=0` runs both without.
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from vlx import runtime  # noqa: E402  (imports nothing heavy)
if __name__ == "__main__":  # before JAX is imported: see vlx/runtime.py
  runtime.reexec_with_hugepage_malloc()

import numpy as np  # noqa: E402

SIDES = ("vlx", "open_clip")


def _bts():
  """bench_train_step (the vlx side, built as the trainer builds it); imported on use, so
  --help and the separate mode's parent never load JAX."""
  import bench_train_step  # pylint: disable=g-import-not-at-top
  return bench_train_step


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--mode", default="inprocess", choices=["inprocess", "separate"],
                 help="inprocess: both sides in one process; separate: each side in its own "
                      "process, alone, alternating (see above)")
  p.add_argument("--rounds", type=int, default=3,
                 help="alternations of vlx and open_clip (separate: pairs of processes)")
  p.add_argument("--steps", type=int, default=5, help="timed steps per side per round")
  p.add_argument("--warmup", type=int, default=2,
                 help="untimed steps after building (separate: in every process)")
  p.add_argument("--settle", type=int, default=1,
                 help="inprocess only: untimed steps at the start of each side's round")
  p.add_argument("--worker", default="", choices=[""] + list(SIDES) + ["open_clip_compile"],
                 help=argparse.SUPPRESS)  # separate mode's child: time one side, print JSON
  p.add_argument("--shape", default="cpu", choices=["cpu", "b16"])
  p.add_argument("--batch", type=int, default=0, help="0: 64 for cpu, 256 for b16")
  p.add_argument("--torch_compile", action="store_true",
                 help="also time open_clip under torch.compile (a third side)")
  p.add_argument("--threads", type=int, default=0,
                 help="torch intra-op threads (default: os.cpu_count(), as XLA uses)")
  p.add_argument("--peak_sizes", default="",
                 help="matmul sizes for the peak (default: 1024,2048 on CPU, 4096,8192 else)")
  p.add_argument("--seed", type=int, default=0)
  args = p.parse_args(argv)
  for name in ("rounds", "steps"):
    if getattr(args, name) < 1:
      p.error(f"--{name} must be >= 1")
  if args.warmup < 0 or args.settle < 0:
    p.error("--warmup and --settle must be >= 0")
  return args


def build_open_clip(config, seed: int, compile_model: bool = False):
  """open_clip's CLIP at the shape of vlx's benchmark `config` (one source for both sides),
  AdamW as vlx's (b2 0.98, eps 1e-6, wd 0.1)."""
  import open_clip  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  from open_clip.loss import ClipLoss  # pylint: disable=g-import-not-at-top
  torch.manual_seed(seed)
  device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
  batch, image_size, context = config.batch_size, config.data.image_size, config.data.max_len
  icfg, tcfg, vocab = config.model.image, config.model.text, config.model.text.vocab_size
  model = open_clip.CLIP(
      embed_dim=config.model.embed_dim,
      vision_cfg=dict(image_size=image_size, patch_size=icfg.patch_size, width=icfg.width,
                      layers=icfg.depth, head_width=icfg.width // icfg.num_heads,
                      mlp_ratio=icfg.mlp_ratio),
      text_cfg=dict(context_length=context, vocab_size=vocab, width=tcfg.width,
                    heads=tcfg.num_heads, layers=tcfg.depth, mlp_ratio=tcfg.mlp_ratio)).to(device)
  model.train()
  opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.98), eps=1e-6,
                          weight_decay=0.1, fused=device.type == "cuda")
  forward = torch.compile(model) if compile_model else model
  loss_fn = ClipLoss()
  g = torch.Generator().manual_seed(seed)
  images = (torch.rand((batch, 3, image_size, image_size), generator=g) * 2 - 1).to(device)
  text = torch.randint(3, vocab - 1, (batch, context), generator=g)
  text[:, -1] = vocab - 1  # EOT (argmax pooling) at the end
  text = text.to(device)
  bf16 = config.model.dtype == "bfloat16"

  def step():
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
      out = forward(images, text)
      img, txt, scale = (out["image_features"], out["text_features"], out["logit_scale"]) if (
          isinstance(out, dict)) else out[:3]
      loss = loss_fn(img.float(), txt.float(), scale)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()
  n_params = sum(p.numel() for p in model.parameters())
  return (step, float), n_params


def build_vlx(shape: str, batch: int, seed: int):
  import jax  # pylint: disable=g-import-not-at-top
  bts = _bts()
  args = bts.parse_args([f"--shape={shape}", f"--batch={batch}", f"--seed={seed}"])
  config = bts.bench_config(args)
  built = bts.build_compiled_step(config)
  rng = np.random.default_rng(seed)
  batch_arrays = jax.device_put(bts.random_batch(config, config.model.text.vocab_size, rng),
                                built["batch_shardings"])
  holder = {"state": built["state"]}

  def step():
    with jax.set_mesh(built["mesh"]):
      holder["state"], metrics = built["compiled"](holder["state"], batch_arrays)
    return metrics

  def sync(metrics):
    return float(jax.device_get(metrics["train/loss"]))
  return (step, sync), config, built


def time_steps(side, n, settle=1):
  """Seconds per step of `side` = (step, sync) over `n` steps, after `settle` untimed ones.

  Steps are dispatched back to back and synchronized once at the end, as a training loop
  runs them. The settle step matters: the first vlx step right after an open_clip round
  ran 0.35-1.6 s slower than the next (the same page faults), a cost of sharing the
  process with a benchmark opponent, not of either step.
  """
  step, sync = side
  for _ in range(settle):
    sync(step())
  t = time.perf_counter()
  out = None
  for _ in range(n):
    out = step()
  sync(out)
  return (time.perf_counter() - t) / n


def _need_torch():
  try:
    import torch  # pylint: disable=g-import-not-at-top
    import open_clip  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  except ImportError as e:
    raise SystemExit(f"needs torch and open_clip_torch (pip install -e '.[torch]'): {e}")
  return torch


def run_worker(args) -> dict:
  """One side alone in this process: build, warm up, time `args.steps` steps."""
  torch = _need_torch()
  import jax  # pylint: disable=g-import-not-at-top
  threads = args.threads or os.cpu_count()
  torch.set_num_threads(threads)
  t0 = time.perf_counter()
  if args.worker == "vlx":
    side, config, built = build_vlx(args.shape, args.batch, args.seed)
    n_params = built["num_params"]
  else:
    config = _bts().bench_config(_bts().parse_args(
        [f"--shape={args.shape}", f"--batch={args.batch}", f"--seed={args.seed}"]))
    side, n_params = build_open_clip(config, args.seed, args.worker == "open_clip_compile")
  for _ in range(args.warmup):
    side[1](side[0]())
  setup_s = time.perf_counter() - t0
  s = time_steps(side, args.steps, settle=0)
  return {"side": args.worker, "examples_per_s": config.batch_size / s, "s_per_step": s,
          "setup_s": round(setup_s, 1), "params": n_params, "batch": config.batch_size,
          "torch_threads": threads, "jax": jax.__version__, "torch": torch.__version__,
          "hugepage_malloc": runtime.hugepage_malloc_active()}


def _median(xs):
  return float(np.median(np.asarray(xs, np.float64)))


def run_separate(args) -> dict:
  """Alternating rounds of one fresh process per side, never two at once (see the doc)."""
  import subprocess  # pylint: disable=g-import-not-at-top
  sides = list(SIDES) + (["open_clip_compile"] if args.torch_compile else [])
  common = [f"--shape={args.shape}", f"--batch={args.batch}", f"--steps={args.steps}",
            f"--warmup={args.warmup}", f"--threads={args.threads}", f"--seed={args.seed}"]
  rows = {name: [] for name in sides}
  for r in range(args.rounds):
    for name in sides:
      proc = subprocess.run([sys.executable, os.path.abspath(__file__), f"--worker={name}"]
                            + common, capture_output=True, text=True, check=False)
      lines = proc.stdout.strip().splitlines()
      if proc.returncode or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"bench_vs_open_clip: the {name} process failed (exit "
                         f"{proc.returncode}): {tail}")
      rows[name].append(json.loads(lines[-1]))
    print(f"round {r + 1}/{args.rounds}: " + ", ".join(
        f"{name} {rows[name][-1]['examples_per_s']:.1f} ex/s" for name in sides), flush=True)
  result = {"mode": "separate", "shape": args.shape}
  for name in sides:
    eps = [row["examples_per_s"] for row in rows[name]]
    result[f"{name}_examples_per_s_median"] = round(_median(eps), 2)
    result[f"{name}_examples_per_s_min"] = round(min(eps), 2)
    result[f"{name}_examples_per_s_max"] = round(max(eps), 2)
  for name in sides[1:]:
    pairs = [v["examples_per_s"] / o["examples_per_s"] for v, o in zip(rows["vlx"], rows[name])]
    result[f"ratio_vlx_over_{name}_per_pair"] = [round(x, 3) for x in pairs]
    result[f"ratio_vlx_over_{name}_median"] = round(_median(pairs), 3)
  first = rows["vlx"][0]
  result.update({
      "rounds": args.rounds, "steps_per_process": args.steps, "warmup": args.warmup,
      "batch": first["batch"], "torch_threads": first["torch_threads"],
      "vlx_params": first["params"], "open_clip_params": rows["open_clip"][0]["params"],
      "setup_s_median": {name: _median([row["setup_s"] for row in rows[name]])
                         for name in sides},
      "hugepage_malloc": first["hugepage_malloc"], "jax": first["jax"],
      "torch": first["torch"], "cpus": os.cpu_count(),
  })
  print("-" * 72)
  for k, v in result.items():
    if "examples_per_s" in k or "ratio" in k:
      print(f"{k:<44} {v}")
  print("-" * 72)
  print(json.dumps(result))
  return result


def main(argv=None):
  args = parse_args(argv)
  if args.worker:
    print(json.dumps(run_worker(args)), flush=True)
    return None
  if args.mode == "separate":
    return run_separate(args)
  bts = _bts()
  try:
    import torch  # pylint: disable=g-import-not-at-top
    import open_clip  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  except ImportError as e:
    raise SystemExit(f"needs torch and open_clip_torch (pip install -e '.[torch]'): {e}")
  import jax  # pylint: disable=g-import-not-at-top
  threads = args.threads or os.cpu_count()
  torch.set_num_threads(threads)

  vlx_step, config, built = build_vlx(args.shape, args.batch, args.seed)
  batch = config.batch_size
  sides = {"vlx": vlx_step}
  sides["open_clip"], oc_params = build_open_clip(config, args.seed)
  if args.torch_compile:
    sides["open_clip_compile"], _ = build_open_clip(config, args.seed, True)
  for _ in range(args.warmup):
    for step, sync in sides.values():
      sync(step())

  times = {name: [] for name in sides}
  for r in range(args.rounds):
    for name, side in sides.items():
      times[name].append(time_steps(side, args.steps, args.settle))
    print(f"round {r + 1}/{args.rounds}: " + ", ".join(
        f"{name} {batch / t[-1]:.1f} ex/s" for name, t in times.items()), flush=True)

  flops = bts.analytic_flops(config)
  dtype = jax.numpy.bfloat16 if config.model.dtype == "bfloat16" else jax.numpy.float32
  sizes = ([int(s) for s in args.peak_sizes.split(",")] if args.peak_sizes else
           [1024, 2048] if jax.devices()[0].platform == "cpu" else [4096, 8192])
  peak, _ = bts.measure_matmul_peak(list(built["mesh"].devices.flat), sizes, dtype)
  best = {name: min(t) for name, t in times.items()}
  result = {"mode": "inprocess", "shape": args.shape}
  for name, s in best.items():
    result[f"{name}_examples_per_s"] = round(batch / s, 2)
  for name, s in best.items():
    if name != "vlx":
      result[f"ratio_vlx_over_{name}"] = round(s / best["vlx"], 3)
  for name, s in best.items():
    result[f"{name}_fraction_of_peak"] = round(flops / s / peak, 4)
  result.update({
      "analytic_gflop_per_step": round(flops / 1e9, 2),
      "matmul_peak_gflops": round(peak / 1e9, 1), "compute_dtype": config.model.dtype,
      "vlx_params": built["num_params"], "open_clip_params": oc_params,
      "rounds": args.rounds, "steps_per_round": args.steps, "settle": args.settle,
      "batch": batch, "torch_threads": threads,
      "hugepage_malloc": runtime.hugepage_malloc_active(), "jax_devices": len(jax.devices()),
      "device": f"{jax.devices()[0].platform}:{getattr(jax.devices()[0], 'device_kind', '')}",
      "jax": jax.__version__, "torch": torch.__version__,
      "open_clip": getattr(__import__("open_clip"), "__version__", "?"),
  })
  print("-" * 72)
  for k, v in result.items():
    if "examples_per_s" in k or "ratio" in k or "fraction" in k or k == "matmul_peak_gflops":
      print(f"{k:<36} {v}")
  print("-" * 72)
  print(json.dumps(result))
  return result


if __name__ == "__main__":
  main()
