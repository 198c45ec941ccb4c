"""The five fusion encoders and CLIP on the same data and step budget, in one table.

  python experiments/compare_fusion.py --root workdirs/compare_fusion [--steps N]
      [--families albef,uniter,oscar,vilbert,lxmert,clip] [--blind uniter,albef]

Each family trains its `configs/<family>.py:tiny` recipe (for `--steps` steps when given,
else the recipe's own count) in `<root>/<family>` through vlx's one trainer; a finished
workdir's final metrics are read back from its `metrics.jsonl` and `eval_metrics.jsonl`
(an interrupted one resumes). Printed per model: parameters, training examples/s (median of the logged rates),
VQA accuracy (and the question-only baseline's), grounding accuracy@0.5, and R@1 both ways:
fusion models by ITC alone, by ITM re-ranking ITC's top 8 (ALBEF's rule) and by ITM
log-odds + ITC logit (BLIP's), over 256 test images with one caption each; CLIP by its
retrieval eval over every caption of the test split, trained at the fusion recipes' batch
(64) for 700 steps (or `--steps`). `--blind` lists the families whose question-only
baseline (`:tiny,blind`: the same model and training with the image and boxes blanked) is
trained and reported too. The table is also written to `<root>/compare_fusion.md`.
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


def finished_metrics(workdir: str, steps: int):
  """The final evaluation a run that reached `steps` already holds (`metrics.jsonl`, then
  any `--mode=eval` re-evaluation of that step in `eval_metrics.jsonl`), or None: a
  finished workdir's table row is read back, not recomputed."""
  final = {}
  for name in ("metrics.jsonl", "eval_metrics.jsonl"):
    path = os.path.join(workdir, name)
    if os.path.exists(path):
      for line in open(path):
        row = json.loads(line)
        if row.get("step") == steps:
          final.update(row)
  evaluated = any(k.split("/")[0] not in ("train", "data", "step") for k in final)
  return final if evaluated else None


def run(family: str, arg: str, steps, workdir: str):
  config = config_lib.load_config_file(os.path.join(REPO, "configs", f"{family}.py:{arg}"))
  with config.unlocked():
    if family == "clip":  # the dual-encoder reference on the fusion recipes' batch
      config.batch_size = 64
      steps = steps or 700
    if steps:
      config.total_steps = steps
      config.eval_every = steps
      config.checkpoint_every = min(config.checkpoint_every, steps)
  final = finished_metrics(workdir, config.total_steps) or trainer.train(config, workdir)
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
           "| grounding acc@0.5 | i2t R@1: ITC / ITM / ITM+ITC | t2i R@1: ITC / ITM / ITM+ITC |",
           "|---|---|---|---|---|---|---|---|---|"]
  for family in args.families.split(","):
    final, params, rate, steps = run(family, "tiny", args.steps,
                                     os.path.join(args.root, family))
    if family == "clip":
      lines.append(f"| clip (dual encoder) | {steps} | {params / 1e6:.2f} | {rate:.1f} | — | — "
                   f"| — | {fmt(final.get('retrieval/i2t_r1'))} / — / — "
                   f"| {fmt(final.get('retrieval/t2i_r1'))} / — / — |")
      print(lines[-1], flush=True)
      continue
    blind = None
    if family in blind_families:
      blind = run(family, "tiny,blind", args.steps,
                  os.path.join(args.root, family + "_blind"))[0].get("vqa/accuracy")
    r1 = lambda d: " / ".join(fmt(final.get(f"itm_retrieval/{d}_r1_{how}"))  # noqa: E731
                              for how in ("itc", "itm", "itm_itc"))
    lines.append(
        f"| {family} | {steps} | {params / 1e6:.2f} | {rate:.1f} "
        f"| {fmt(final.get('vqa/accuracy'))} | {fmt(blind)} "
        f"| {fmt(final.get('grounding/accuracy_iou50'))} | {r1('i2t')} | {r1('t2i')} |")
    print(lines[-1], flush=True)
  table = "\n".join(lines)
  print(f"\nbatch 64, synthetic scenes (test split):\n{table}")
  with open(os.path.join(args.root, "compare_fusion.md"), "w") as f:
    f.write(table + "\n")


if __name__ == "__main__":
  main()
