"""Plot a workdir's metrics.jsonl: training curves and eval metrics, one PNG.

usage: python experiments/plot_metrics.py WORKDIR [WORKDIR ...] [--out plot.png]
Several workdirs are overlaid (e.g. clip vs siglip vs align). Needs matplotlib
(`pip install -e ".[plot]"`).
"""

from __future__ import annotations

import argparse
import json
import os

DEFAULT_KEYS = ("train/loss", "zeroshot/top1", "zeroshot/shape_acc", "zeroshot/colour_acc",
                "retrieval/i2t_r1", "retrieval/t2i_r1", "linear_probe/10shot",
                "train/examples_per_s")


def read(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(l) for l in f if l.strip()]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("workdirs", nargs="+")
  parser.add_argument("--out", default=None, help="PNG path (default: first workdir/metrics.png)")
  parser.add_argument("--keys", default=",".join(DEFAULT_KEYS))
  args = parser.parse_args()
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  runs = {os.path.basename(os.path.normpath(w)): read(w) for w in args.workdirs}
  keys = [k for k in args.keys.split(",") if any(k in r for rows in runs.values() for r in rows)]
  cols = 4
  rows_n = (len(keys) + cols - 1) // cols
  fig, axes = plt.subplots(rows_n, cols, figsize=(4 * cols, 3 * rows_n), squeeze=False)
  for ax, key in zip(axes.flat, keys):
    for name, rows in runs.items():
      pts = [(r["step"], r[key]) for r in rows if key in r]
      if pts:
        ax.plot(*zip(*pts), marker="o" if len(pts) < 10 else None, label=name)
    ax.set_title(key)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
  for ax in list(axes.flat)[len(keys):]:
    ax.axis("off")
  axes.flat[0].legend(fontsize=8)
  fig.tight_layout()
  out = args.out or os.path.join(args.workdirs[0], "metrics.png")
  fig.savefig(out, dpi=100)
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
