"""Decoding throughput: greedy with and without the KV cache, and beam search, at length 32.

  python experiments/bench_decode.py [--config=configs/coca.py:tiny] [--batch=64]
      [--max_len=32] [--beam_size=4] [--repeats=3] [--workdir=W (trained params)]
  python experiments/bench_decode.py --config=configs/unified.py:tiny --prefix_lens=64,256

A prefix-LM (configs/unified.py) decodes after a prefix of image tokens and a prompt: with
`--prefix_lens` each length is timed (image tokens plus a random prompt that fills the rest;
the image is `--image_size` pixels, 32 by default, 16 tokens for the tiny model), greedy with
and without the cache (the uncached loop re-runs the whole prefix every token, which is what
the cache saves) and beam search.

Every sequence is decoded to exactly `max_len` tokens (EOS is disabled), so tokens/s
compare like with like. Prints one line per method and, last, one JSON object.
Random-initialized params unless --workdir points at a trained run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", default="configs/coca.py:tiny",
                 help="config whose model decodes (random weights)")
  p.add_argument("--workdir", default=None,
                 help="a trained run: its config and params instead of --config")
  p.add_argument("--batch", type=int, default=64, help="images decoded at once")
  p.add_argument("--max_len", type=int, default=32, help="tokens decoded per image")
  p.add_argument("--beam_size", type=int, default=4, help="beams of the beam search")
  p.add_argument("--repeats", type=int, default=3, help="timed calls per method (best kept)")
  p.add_argument("--prefix_lens", default="64,256",
                 help="prefix-LM models: prefix lengths (image tokens + prompt) to time")
  p.add_argument("--image_size", type=int, default=32,
                 help="prefix-LM models: image size of the bench (fewer image tokens)")
  return p.parse_args(argv)


def main(argv):
  args = parse_args(argv)  # before JAX is imported: --help costs nothing
  flags = {k: v for k, v in vars(args).items() if v is not None}
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from vlx import config_lib, decode  # pylint: disable=g-import-not-at-top
  from vlx.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  from vlx import build  # pylint: disable=g-import-not-at-top

  batch = int(flags.get("batch", 64))
  max_len = int(flags.get("max_len", 32))
  beam = int(flags.get("beam_size", 4))
  repeats = int(flags.get("repeats", 3))
  if "workdir" in flags:
    from vlx.predict import load_model  # pylint: disable=g-import-not-at-top
    config, model, _, params = load_model(flags["workdir"])
  else:
    config = config_lib.load_config_file(flags.get("config", "configs/coca.py:tiny"))
    model = build.build_model(config)
    if config.model.name == "prefix_lm":  # params for the bench's image size, no dataset read
      s = int(flags.get("image_size", 32))
      dummy = {"image": np.zeros((1, s, s, 3), np.float32),
               **{k: np.zeros((1, 2), np.int32) for k in ("text_in", "mask_ar", "input_mask")}}
    else:
      dummy = {k: v[:1] for k, v in build.dummy_batch(config).items()}
    params = mesh_lib.unbox(jax.jit(lambda r: model.init(r, dummy)["params"])(
        jax.random.key(0)))
  size = config.data.image_size
  images = np.random.default_rng(0).uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)
  no_eos = -1  # never produced: every sequence runs to max_len
  if config.model.name == "prefix_lm":
    return bench_prefix_lm(model, params, flags, batch, max_len, beam, repeats)

  results = {}
  for name, cfg in (
      ("greedy_cached", decode.DecodeConfig("greedy", max_len, use_cache=True)),
      ("greedy_uncached", decode.DecodeConfig("greedy", max_len, use_cache=False)),
      (f"beam{beam}_cached", decode.DecodeConfig("beam", max_len, beam_size=beam,
                                                 use_cache=True)),
  ):
    fn = jax.jit(decode.make_generate_fn(model, cfg, bos=2, eos=no_eos))
    t = time.perf_counter()
    out = jax.block_until_ready(fn(params, images))
    compile_s = time.perf_counter() - t
    assert out.shape == (batch, max_len), out.shape
    times = []
    for _ in range(repeats):
      t = time.perf_counter()
      jax.block_until_ready(fn(params, images))
      times.append(time.perf_counter() - t)
    best = min(times)
    # Beam search: tokens of the returned captions (batch x max_len), not of all beams.
    results[name] = {"tokens_per_s": batch * max_len / best, "seconds": best,
                     "first_call_s": compile_s}
    print(f"{name:>18}: {batch * max_len / best:10.1f} tokens/s  ({best * 1e3:.1f} ms for "
          f"{batch} x {max_len} tokens; first call {compile_s:.1f} s)")
  speedup = (results["greedy_cached"]["tokens_per_s"]
             / results["greedy_uncached"]["tokens_per_s"])
  print(f"KV cache speed-up (greedy, length {max_len}): {speedup:.1f}x")
  print(json.dumps({"backend": jax.default_backend(), "batch": batch, "max_len": max_len,
                    "cache_speedup": speedup,
                    **{f"{k}_tokens_per_s": v["tokens_per_s"] for k, v in results.items()}}))


def _timed(fn, args, repeats):
  """(best seconds over `repeats` calls, first call's seconds)."""
  import jax  # pylint: disable=g-import-not-at-top
  t = time.perf_counter()
  jax.block_until_ready(fn(*args))
  first = time.perf_counter() - t
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t)
  return min(times), first


def bench_prefix_lm(model, params, flags, batch, max_len, beam, repeats):
  """Tokens/s of the prefix-LM generator at each prefix length (module docstring)."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from vlx import decode  # pylint: disable=g-import-not-at-top
  from vlx.families.unified import generate as gen  # pylint: disable=g-import-not-at-top
  size = int(flags.get("image_size", 32))
  rng = np.random.default_rng(0)
  images = rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)
  num_image = int(jax.eval_shape(lambda p, x: model.apply({"params": p}, x,
                                                          method="image_embeds"),
                                 params, images[:1]).shape[1])
  vocab = int(model.decoder["vocab_size"])
  results = {}
  for prefix in (int(x) for x in str(flags.get("prefix_lens", "64,256")).split(",")):
    n = prefix - num_image
    if n < 1:
      raise SystemExit(f"--prefix_lens {prefix}: the image alone is {num_image} tokens; "
                       f"use a longer prefix or a smaller --image_size")
    prompt = rng.integers(3, vocab, (batch, n)).astype(np.int32)
    args = (params, images, prompt, np.ones((batch, n), bool), np.zeros((batch, n), np.int32))
    for name, cfg in (
        ("greedy_cached", decode.DecodeConfig("greedy", max_len, use_cache=True)),
        ("greedy_uncached", decode.DecodeConfig("greedy", max_len, use_cache=False)),
        (f"beam{beam}_cached", decode.DecodeConfig("beam", max_len, beam_size=beam)),
    ):
      best, first = _timed(jax.jit(gen.make_generate_fn(model, cfg, eos=-1)), args, repeats)
      results[f"prefix{prefix}_{name}"] = batch * max_len / best
      print(f"prefix {prefix:4d} {name:>16}: {batch * max_len / best:10.1f} tokens/s  "
            f"({best * 1e3:.1f} ms for {batch} x {max_len} tokens; first call {first:.1f} s)")
    speedup = results[f"prefix{prefix}_greedy_cached"] / results[f"prefix{prefix}_greedy_uncached"]
    results[f"prefix{prefix}_cache_speedup"] = speedup
    print(f"prefix {prefix}: KV cache speed-up (greedy, {max_len} tokens) {speedup:.1f}x")
  print(json.dumps({"backend": jax.default_backend(), "batch": batch, "max_len": max_len,
                    "image_tokens": num_image,
                    **{f"{k}_tokens_per_s" if "speedup" not in k else k: v
                       for k, v in results.items()}}))


if __name__ == "__main__":
  from vlx import runtime  # noqa: E402
  runtime.reexec_with_hugepage_malloc()  # before JAX starts (see vlx/runtime.py)
  main(sys.argv[1:])
