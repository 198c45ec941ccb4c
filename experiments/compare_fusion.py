"""The five fusion encoders and CLIP on the same data and step budget, in one table.

  python experiments/compare_fusion.py --root workdirs/compare_fusion [--steps N]
      [--families albef,uniter,oscar,vilbert,lxmert,clip] [--blind uniter,albef]

Each family trains its `configs/<family>.py:tiny` recipe (for `--steps` steps when given,
else the recipe's own count) in `<root>/<family>` through vlx's one trainer; a finished
workdir is resumed, so only its evaluation runs again. Printed per model: parameters,
training examples/s (median of the logged rates), VQA accuracy, grounding accuracy@0.5, and
image->text R@1: fusion models by ITC alone, by ITM re-ranking ITC's top 8 (ALBEF's rule),
and by ITM log-odds + ITC logit (BLIP's), over 256 test images with one caption each; CLIP
by its retrieval eval over every caption of the test split. `--blind` lists the families
whose question-only baseline (`:tiny,blind`, same training) is trained and reported too.
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


def run(family: str, arg: str, steps, workdir: str):
  config = config_lib.load_config_file(os.path.join(REPO, "configs", f"{family}.py:{arg}"))
  if steps:
    with config.unlocked():
      config.total_steps = steps
      config.eval_every = steps
      config.checkpoint_every = min(config.checkpoint_every, steps)
  final = trainer.train(config, workdir)
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  rates = [r["train/examples_per_s"] for r in rows if "train/examples_per_s" in r][1:]
  params = next((r["model/num_params"] for r in rows if "model/num_params" in r), float("nan"))
  return final, params, statistics.median(rates) if rates else float("nan"), config.total_steps


def fmt(x, digits=3):
  return "—" if x is None else f"{x:.{digits}f}"


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--steps", type=int, default=0, help="0: each recipe's own step count")
  ap.add_argument("--root", default="workdirs/compare_fusion")
  ap.add_argument("--families", default=",".join(FUSION + ("clip",)))
  ap.add_argument("--blind", default="", help="families whose question-only baseline to run")
  args = ap.parse_args()
  blind_families = [f for f in args.blind.split(",") if f]
  lines = ["| model | steps | params (M) | train ex/s | VQA acc | question-only VQA "
           "| grounding acc@0.5 | i2t R@1 ITC | ITM re-ranked | ITM + ITC re-ranked |",
           "|---|---|---|---|---|---|---|---|---|---|"]
  for family in args.families.split(","):
    final, params, rate, steps = run(family, "tiny", args.steps,
                                     os.path.join(args.root, family))
    if family == "clip":
      lines.append(f"| clip (dual encoder) | {steps} | {params / 1e6:.2f} | {rate:.1f} | — | — "
                   f"| — | {fmt(final.get('retrieval/i2t_r1'))} | — | — |")
      continue
    blind = None
    if family in blind_families:
      blind = run(family, "tiny,blind", args.steps,
                  os.path.join(args.root, family + "_blind"))[0].get("vqa/accuracy")
    lines.append(
        f"| {family} | {steps} | {params / 1e6:.2f} | {rate:.1f} "
        f"| {fmt(final.get('vqa/accuracy'))} | {fmt(blind)} "
        f"| {fmt(final.get('grounding/accuracy_iou50'))} "
        f"| {fmt(final.get('itm_retrieval/i2t_r1_itc'))} "
        f"| {fmt(final.get('itm_retrieval/i2t_r1_itm'))} "
        f"| {fmt(final.get('itm_retrieval/i2t_r1_itm_itc'))} |")
    print(lines[-1], flush=True)
  table = "\n".join(lines)
  print(f"\nbatch 64, synthetic scenes (test split):\n{table}")
  with open(os.path.join(args.root, "compare_fusion.md"), "w") as f:
    f.write(table + "\n")


if __name__ == "__main__":
  main()
