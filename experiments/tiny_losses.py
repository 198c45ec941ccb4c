"""Records (or checks) the first N logged training losses of every `configs/*.py:tiny` recipe.

A refactor that claims "behaviour stays the same" runs this before and after:

  python experiments/tiny_losses.py --out=/tmp/before.json            # record
  python experiments/tiny_losses.py --compare=/tmp/before.json        # largest difference

Each recipe trains N steps (log_every=1, no evaluation) in a fresh temporary workdir
through `vlx.main`, the user's entry point.
"""

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile


def losses(config_path: str, steps: int) -> list:
  with tempfile.TemporaryDirectory() as workdir:
    cmd = [sys.executable, "-m", "vlx.main", f"--config={config_path}:tiny",
           f"--workdir={workdir}", f"--config.total_steps={steps}", "--config.log_every=1",
           f"--config.checkpoint_every={steps}", f"--config.eval_every={10 * steps}",
           "--config.evals={}"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  return [r["train/loss"] for r in rows if "train/loss" in r][:steps]


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  ap.add_argument("--steps", type=int, default=20)
  ap.add_argument("--out", default="")
  ap.add_argument("--compare", default="")
  ap.add_argument("--configs", default="configs/*.py")
  args = ap.parse_args()
  result = {}
  for path in sorted(glob.glob(args.configs)):
    name = os.path.basename(path)[:-3]
    result[name] = losses(path, args.steps)
    print(f"{name:10s} {result[name][0]:.6f} ... {result[name][-1]:.6f}", flush=True)
  if args.out:
    with open(args.out, "w") as f:
      json.dump(result, f, indent=1)
  if args.compare:
    before = json.load(open(args.compare))
    worst = 0.0
    for name, after in result.items():
      if name not in before:
        print(f"{name}: no recorded losses"); continue
      d = max(abs(a - b) for a, b in zip(after, before[name]))
      rel = max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(after, before[name]))
      worst = max(worst, d)
      print(f"{name:10s} max |diff| {d:.3g} (relative {rel:.3g}) over {len(after)} losses")
    print(f"largest difference: {worst:.3g}")


if __name__ == "__main__":
  main()
