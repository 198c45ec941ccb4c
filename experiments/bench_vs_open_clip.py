"""vlx's train step against open_clip's, side by side in one process, same shape and threads.

Installs nothing: open_clip and torch come from the `torch` extra (`pip install -e ".[torch]"`). The two are timed in alternating rounds (vlx, open_clip,
vlx, ...), so drift in the machine's speed (thermal, neighbours) hits both alike; each
side's figure is its best round. Both run the same model (CLIP ViT 256x6 on 64px/8
patches + text 256x6, context 32, vocab 4096, embedding 256), batch, AdamW and softmax
CLIP loss (open_clip's `ClipLoss`) in fp32. Differences that remain, each in open_clip's
favour or neutral: vlx's step also clips the global gradient norm, runs its LR schedule and
NaN guard, and uses tanh-GELU (open_clip: erf-GELU); open_clip decays every parameter.
 FLOPs are the analytic model count of
`bench_train_step.analytic_flops`, the fraction is of the fp32 matmul peak JAX measures on
this machine (`bench_train_step.measure_matmul_peak`).

    python experiments/bench_vs_open_clip.py [--rounds 3] [--steps 5] [--batch 64]

Like `python -m vlx.main`, the script re-executes itself once with huge-page malloc
(vlx/runtime.py), which both sides then share; `VLX_HUGEPAGE_MALLOC=0` runs both without.

Only the CPU shape is implemented; the ViT-B/16 GPU comparison of the performance issue
needs a lent GPU and is not part of this script yet. The last line is one JSON object.
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

import bench_train_step as bts  # noqa: E402  (the vlx side, built as the trainer builds it)


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--rounds", type=int, default=3, help="alternations of vlx and open_clip")
  p.add_argument("--steps", type=int, default=5, help="timed steps per side per round")
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--settle", type=int, default=1,
                 help="untimed steps at the start of each side's round (see time_steps)")
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--threads", type=int, default=0,
                 help="torch intra-op threads (default: os.cpu_count(), as XLA uses)")
  p.add_argument("--peak_sizes", default="1024,2048")
  p.add_argument("--seed", type=int, default=0)
  return p.parse_args(argv)


def build_open_clip(batch: int, seed: int):
  """open_clip's CLIP at the benchmark shape, AdamW as vlx's (b2 0.98, eps 1e-6, wd 0.1)."""
  import open_clip  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  from open_clip.loss import ClipLoss  # pylint: disable=g-import-not-at-top
  torch.manual_seed(seed)
  model = open_clip.CLIP(
      embed_dim=256,
      vision_cfg=dict(image_size=64, patch_size=8, width=256, layers=6, head_width=64,
                      mlp_ratio=4.0),
      text_cfg=dict(context_length=32, vocab_size=4096, width=256, heads=4, layers=6,
                    mlp_ratio=4.0)).train()
  opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.98), eps=1e-6,
                          weight_decay=0.1)
  loss_fn = ClipLoss()
  g = torch.Generator().manual_seed(seed)
  images = torch.rand((batch, 3, 64, 64), generator=g) * 2 - 1
  text = torch.randint(3, 4095, (batch, 32), generator=g)
  text[:, -1] = 4095  # EOT (argmax pooling) at the end

  def step():
    out = model(images, text)
    img, txt, scale = (out["image_features"], out["text_features"], out["logit_scale"]) if (
        isinstance(out, dict)) else out[:3]
    loss = loss_fn(img, txt, scale)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())
  n_params = sum(p.numel() for p in model.parameters())
  return step, n_params


def build_vlx(batch: int, seed: int):
  import jax  # pylint: disable=g-import-not-at-top
  args = bts.parse_args([f"--batch={batch}", f"--seed={seed}"])
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
  return step, sync, config, built


def time_steps(step, n, sync=None, settle=1):
  """Seconds per step over `n` steps, after `settle` untimed ones.

  The settle step matters: the first step of one side right after the other side's round
  ran ~0.4-1.6 s slower (measured on vlx; the same page faults, so the cost is the
  allocator and caches the other library left behind), which is a cost of sharing the
  process with a benchmark opponent, not of either step.
  """
  for _ in range(settle):
    out = step()
    if sync is not None:
      sync(out)
  t = time.perf_counter()
  out = None
  for _ in range(n):
    out = step()
  if sync is not None:
    sync(out)
  return (time.perf_counter() - t) / n


def main(argv=None):
  args = parse_args(argv)
  try:
    import torch  # pylint: disable=g-import-not-at-top
    import open_clip  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  except ImportError as e:
    raise SystemExit(f"needs torch and open_clip_torch (pip install -e '.[torch]'): {e}")
  import jax  # pylint: disable=g-import-not-at-top
  threads = args.threads or os.cpu_count()
  torch.set_num_threads(threads)

  vlx_step, vlx_sync, config, built = build_vlx(args.batch, args.seed)
  oc_step, oc_params = build_open_clip(args.batch, args.seed)
  for _ in range(args.warmup):
    vlx_sync(vlx_step())
    oc_step()

  vlx_times, oc_times = [], []
  for r in range(args.rounds):
    vlx_times.append(time_steps(vlx_step, args.steps, vlx_sync, args.settle))
    oc_times.append(time_steps(oc_step, args.steps, settle=args.settle))
    print(f"round {r + 1}/{args.rounds}: vlx {args.batch / vlx_times[-1]:.1f} ex/s, "
          f"open_clip {args.batch / oc_times[-1]:.1f} ex/s", flush=True)

  flops = bts.analytic_flops(config)
  peak, _ = bts.measure_matmul_peak(list(built["mesh"].devices.flat),
                                    [int(s) for s in args.peak_sizes.split(",")],
                                    jax.numpy.float32)
  vlx_s, oc_s = min(vlx_times), min(oc_times)
  result = {
      "vlx_examples_per_s": round(args.batch / vlx_s, 2),
      "open_clip_examples_per_s": round(args.batch / oc_s, 2),
      "ratio_vlx_over_open_clip": round(oc_s / vlx_s, 3),
      "vlx_fraction_of_peak": round(flops / vlx_s / peak, 4),
      "open_clip_fraction_of_peak": round(flops / oc_s / peak, 4),
      "analytic_gflop_per_step": round(flops / 1e9, 2),
      "fp32_matmul_peak_gflops": round(peak / 1e9, 1),
      "vlx_params": built["num_params"], "open_clip_params": oc_params,
      "rounds": args.rounds, "steps_per_round": args.steps, "settle": args.settle, "batch": args.batch,
      "torch_threads": threads,
      "hugepage_malloc": runtime.hugepage_malloc_active(), "jax_devices": len(jax.devices()),
      "jax": jax.__version__, "torch": torch.__version__,
      "open_clip": getattr(__import__("open_clip"), "__version__", "?"),
  }
  print("-" * 72)
  for k in ("vlx_examples_per_s", "open_clip_examples_per_s", "ratio_vlx_over_open_clip",
            "vlx_fraction_of_peak", "open_clip_fraction_of_peak", "fp32_matmul_peak_gflops"):
    print(f"{k:<28} {result[k]}")
  print("-" * 72)
  print(json.dumps(result))
  return result


if __name__ == "__main__":
  main()
