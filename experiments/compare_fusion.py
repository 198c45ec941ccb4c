"""The five fusion encoders and CLIP on the same data and step budget, in one table.

  python experiments/compare_fusion.py --steps 1000 --root /tmp/compare_fusion

Each family trains its `configs/<family>.py:tiny` recipe for `--steps` steps in
`<root>/<family>` through vlx's one trainer (a finished workdir is resumed, so only its
evaluation runs again; `--families` picks a subset). Printed per model: parameters,
training examples/s (median of the logged rates), VQA accuracy, grounding accuracy@0.5,
retrieval R@1 (image->text; fusion models: ITC alone and ITM-re-ranked top-8 over 256 test
images with one caption each; CLIP: its retrieval eval over every caption of the test
split) and, with `--blind`, the question-only baseline trained the same way (`:tiny,blind`).
The table is also written to `<root>/compare_fusion.md`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from vlx import runtime  # noqa: E402  (before JAX: huge-page malloc re-exec)

runtime.reexec_with_hugepage_malloc()

from vlx import config_lib  # noqa: E402
from vlx.train import trainer  # noqa: E402

FUSION = ("albef", "uniter", "oscar", "vilbert", "lxmert")
REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def run(family: str, arg: str, steps: int, workdir: str):
  config = config_lib.load_config_file(os.path.join(REPO, "configs", f"{family}.py:{arg}"))
  with config.unlocked():
    config.total_steps = steps
    config.eval_every = steps
    config.checkpoint_every = min(config.checkpoint_every, steps)
  final = trainer.train(config, workdir)
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  rates = [r["train/examples_per_s"] for r in rows if "train/examples_per_s" in r][1:]
  params = next((r["model/num_params"] for r in rows if "model/num_params" in r), float("nan"))
  return final, params, statistics.median(rates) if rates else float("nan")


def fmt(x, digits=3):
  return "—" if x is None else f"{x:.{digits}f}"


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--steps", type=int, default=1000)
  ap.add_argument("--root", default="/tmp/compare_fusion")
  ap.add_argument("--families", default=",".join(FUSION + ("clip",)))
  ap.add_argument("--blind", action="store_true", help="also train the question-only baselines")
  args = ap.parse_args()
  lines = ["| model | params (M) | train ex/s | VQA acc | question-only VQA | grounding acc@0.5 "
           "| i2t R@1 ITC | i2t R@1 ITM-re-ranked |",
           "|---|---|---|---|---|---|---|---|"]
  for family in args.families.split(","):
    final, params, rate = run(family, "tiny", args.steps, os.path.join(args.root, family))
    if family == "clip":
      lines.append(f"| clip (dual encoder) | {params / 1e6:.2f} | {rate:.1f} | — | — | — "
                   f"| {fmt(final.get('retrieval/i2t_r1'))} | — |")
      continue
    blind = None
    if args.blind:
      blind = run(family, "tiny,blind", args.steps,
                  os.path.join(args.root, family + "_blind"))[0].get("vqa/accuracy")
    lines.append(
        f"| {family} | {params / 1e6:.2f} | {rate:.1f} | {fmt(final.get('vqa/accuracy'))} "
        f"| {fmt(blind)} | {fmt(final.get('grounding/accuracy_iou50'))} "
        f"| {fmt(final.get('itm_retrieval/i2t_r1_itc'))} "
        f"| {fmt(final.get('itm_retrieval/i2t_r1_itm'))} |")
    print(lines[-1], flush=True)
  table = "\n".join(lines)
  print(f"\n{args.steps} steps each, batch 64, synthetic scenes (test split):\n{table}")
  with open(os.path.join(args.root, "compare_fusion.md"), "w") as f:
    f.write(table + "\n")


if __name__ == "__main__":
  main()
