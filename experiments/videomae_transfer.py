"""VideoMAE pretraining then video-text fine-tuning, against video-text training from scratch
with the same total number of steps (issue 19): one table, and the reconstruction curve.

  1. `configs/videomae.py:tiny` for --pretrain steps (masked video modelling, no text);
  2. `configs/vivit.py:tiny,joint` for --finetune steps, its video tower (the joint ViViT
     over 2-frame tubelets, MAE's encoder) started from the MAE encoder
     (`--config.init_from=<1> --config.init_map=video_tower=video`);
  3. `configs/vivit.py:tiny,joint` from scratch for pretrain + finetune steps.

    python experiments/videomae_transfer.py [--pretrain 600] [--finetune 600] [--out DIR]
        [--scratch DIR]

`--scratch DIR` takes arm 3 from a finished `configs/vivit.py:tiny,joint` run of pretrain +
finetune steps (the README's own run, say) instead of training it again; its config is checked.

Prints the final evaluation of 2 and 3 (temporal twins, the frame-shuffle probe, text->video
R@1 on the static and the temporal split) and writes DIR/mae_loss.png (needs matplotlib).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLUMNS = (("twins", "twins/accuracy"), ("twins, shuffled", "twins_shuffled/accuracy"),
           ("static t2v R@1", "retrieval/static/t2v_r1"),
           ("temporal t2v R@1", "retrieval/temporal/t2v_r1"), ("all t2v R@1", "retrieval/t2v_r1"))
# The video-text arms: the joint ViViT, whose tubelet tokens are what VideoMAE pretrains
# (vivit.py:tiny itself is the factorised tower over single frames).
VIVIT = "configs/vivit.py:tiny,joint"


def rows_of(workdir: str):
  """The run's metrics.jsonl rows, read as the trainer reads them (a cut-off last line
  dropped, any other bad line an error)."""
  from vlx.train.metrics_writer import read_metrics  # pylint: disable=g-import-not-at-top
  return read_metrics(workdir)


def run(config: str, workdir: str, steps: int, *flags: str) -> float:
  """One `python -m vlx.main` run (its output to workdir/log.txt); returns its wall time."""
  os.makedirs(workdir, exist_ok=True)
  cmd = [sys.executable, "-m", "vlx.main", f"--config={config}", f"--workdir={workdir}",
         f"--config.total_steps={steps}", f"--config.eval_every={steps}",
         f"--config.checkpoint_every={steps}", *flags]
  print("$", " ".join(cmd[1:]), flush=True)
  t = time.time()
  with open(os.path.join(workdir, "log.txt"), "w") as log:
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
  return time.time() - t


def check_scratch(workdir: str, steps: int) -> None:
  """An existing from-scratch run must be the video-text recipe with `steps` steps that
  evaluated at its end."""
  with open(os.path.join(workdir, "config.json")) as f:
    config = json.load(f)
  encoder = config["model"].get("video", {}).get("encoder")
  if config["model"]["name"] != "video_text" or config["total_steps"] != steps or \
      encoder != "joint":
    raise SystemExit(f"--scratch {workdir}: a {config['model']['name']} run of "
                     f"{config['total_steps']} steps (video encoder {encoder}), not "
                     f"{VIVIT} with {steps}")
  if final_eval(workdir).get("step") != steps:
    raise SystemExit(f"--scratch {workdir}: no evaluation at step {steps}")


def final_eval(workdir: str) -> dict:
  evals = [r for r in rows_of(workdir) if any(k in r for _, k in COLUMNS)]
  return evals[-1] if evals else {}


def plot_mae(workdir: str, out: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  rows = [r for r in rows_of(workdir) if "train/mae_pixels/loss" in r]
  steps = [r["step"] for r in rows]
  loss = [r["train/mae_pixels/loss"] for r in rows]
  window = 10  # each logged value is one batch's loss: a running mean shows the trend
  smooth = [sum(loss[max(0, i - window + 1):i + 1]) / len(loss[max(0, i - window + 1):i + 1])
            for i in range(len(loss))]
  fig, ax = plt.subplots(figsize=(5.5, 3.4))
  ax.plot(steps, loss, lw=0.6, alpha=0.4, label="one batch")
  ax.plot(steps, smooth, lw=1.8, label=f"mean of the last {window} logs")
  ax.set_yscale("log")
  ax.set(xlabel="step", ylabel="masked-tubelet pixel MSE",
         title="VideoMAE tiny: reconstruction (90% tubes hidden)")
  ax.legend()
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(out, dpi=120)
  print(f"wrote {out}")


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--pretrain", type=int, default=600)
  p.add_argument("--finetune", type=int, default=600)
  p.add_argument("--out", default="workdirs/videomae_transfer")
  p.add_argument("--scratch", default=None,
                 help="a finished vivit.py:tiny,joint run of pretrain + finetune steps to reuse")
  args = p.parse_args()
  out = os.path.abspath(args.out)
  mae, ft, scratch = (os.path.join(out, n) for n in ("videomae", "finetuned", "scratch"))
  if args.scratch:  # checked before any training
    scratch = os.path.abspath(args.scratch)
    check_scratch(scratch, args.pretrain + args.finetune)
  wall = {"videomae": run("configs/videomae.py:tiny", mae, args.pretrain,
                          "--config.log_every=10")}
  wall["finetuned"] = run(VIVIT, ft, args.finetune,
                          f"--config.init_from={mae}", "--config.init_map=video_tower=video")
  wall["scratch"] = (None if args.scratch else
                     run(VIVIT, scratch, args.pretrain + args.finetune))

  losses = [r["train/mae_pixels/loss"] for r in rows_of(mae) if "train/mae_pixels/loss" in r]
  print(f"\nVideoMAE reconstruction loss {losses[0]:.4f} -> {losses[-1]:.4f} over "
        f"{args.pretrain} steps ({wall['videomae']:.0f} s)")
  header = ["run", "steps", "wall s"] + [name for name, _ in COLUMNS]
  print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
  for name, workdir, steps, seconds in (
      ("VideoMAE -> video-text", ft, f"{args.pretrain} + {args.finetune}", wall["finetuned"]),
      ("video-text from scratch", scratch, f"{args.pretrain + args.finetune}",
       wall["scratch"])):
    metrics = final_eval(workdir)
    cells = [name, steps, "-" if seconds is None else f"{seconds:.0f}"] + [
        f"{metrics[key]:.3f}" if key in metrics else "-" for _, key in COLUMNS]
    print("| " + " | ".join(cells) + " |")
  try:
    plot_mae(mae, os.path.join(out, "mae_loss.png"))
  except ImportError:
    print("matplotlib missing: no plot (pip install -e '.[plot]')")


if __name__ == "__main__":
  main()
