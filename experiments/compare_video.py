"""Image->video transfer, every paradigm on the same data and step budget (issue 20): one
table and one plot.

  1. `configs/video_transfer.py:image` (`image,where` with --where) trains the image model (a
     CLIP on still frames of the synthetic videos) in OUT/image_<steps> (OUT/image_where_<steps>;
     skipped when it holds a finished run, or given with --image);
  2. each paradigm (`configs/video_transfer.py:<paradigm>,image=OUT/image_<steps>`; the row
     `st_adapter+seq_transformer` runs `st_adapter,seq_transformer`) trains --steps steps
     from it (0: not run; the row keeps its earlier figures);
  3. each paradigm's video side fine-tuned for video QA and temporal grounding
     (`<paradigm>,qa,image=OUT/image_<steps>`: configs/video_qa.py's fusion and heads on it) for
     --qa_steps steps (0: not run);
  4. every row's train step timed side by side (experiments/bench_steps.py: compiled as the
     trainer compiles it, timed in alternating rounds, --bench_rounds rounds; 0: not run,
     the rows keep their earlier figures): the table's clips/s, comparable between rows
     even when the training runs shared the cores with other jobs;
  5. one table: trainable parameters, clips/s, training wall time, the temporal twins, the
     twins with frames shuffled, static-split text->video R@1 (strict and caption-matched),
     video QA accuracy (all questions; the temporal videos' questions, and with frames
     shuffled) and grounding mIoU, and a plot. Rows and stages not rerun are kept from
     OUT/results.json when they started from the same image model.

    python experiments/compare_video.py [--out DIR] [--steps 1000] [--qa_steps 1000]
        [--paradigms a,b,...] [--image DIR] [--data_dir DIR] [--where]
        [--bench_rounds 3] [--bench_steps 10]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
CONFIG = "configs/video_transfer.py"


def _paradigms() -> dict:
  """paradigm -> frozen | adapted, as configs/video_transfer.py lists them (one with
  seqTransf stacked on top is the row `<paradigm>+seq_transformer`, of its paradigm's kind)."""
  from vlx import config_lib  # pylint: disable=g-import-not-at-top
  config = config_lib.load_config_module(os.path.join(ROOT, CONFIG))
  kinds = {**{p: "frozen" for p in config.FROZEN}, **{p: "adapted" for p in config.ADAPTED}}
  rows = {}
  for paradigm, kind in kinds.items():  # a stacked row right after its paradigm's
    rows[paradigm] = kind
    if paradigm in config.STACKABLE:
      rows[f"{paradigm}+seq_transformer"] = kind
  return rows


KIND = _paradigms()
PARADIGMS = tuple(KIND)
# The rows run by default: every paradigm, and EVL and ST-Adapter with seqTransf stacked on
# top (each paradigm's best on the twins).
DEFAULT_ROWS = tuple(p for p in PARADIGMS if "+" not in p) + ("evl+seq_transformer",
                                                                "st_adapter+seq_transformer")


def spec_of(row: str) -> str:
  """A row's variant words: `st_adapter+seq_transformer` -> `st_adapter,seq_transformer`."""
  return row.replace("+", ",")


COLUMNS = (("twins", "twins/accuracy"), ("twins, frames shuffled", "twins_shuffled/accuracy"),
           ("static t2v R@1 (matched)", "retrieval/static/matched_t2v_r1"),
           ("static t2v R@1 (strict)", "retrieval/static/t2v_r1"),
           ("temporal t2v R@1 (matched)", "retrieval/temporal/matched_t2v_r1"))
QA_COLUMNS = (("video QA", "qa/open/accuracy"), ("QA temporal", "qa/open/temporal/accuracy"),
              ("QA temporal, frames shuffled", "qa_shuffled/open/temporal/accuracy"),
              ("grounding mIoU", "grounding/miou"))
QA_PREFIXES = ("qa/", "qa_shuffled/", "grounding/")
# A paradigm whose QA model is another's (text_prompt's prompts are text-side, and the QA
# model tunes its text tower): its QA stage is not run, the other's figures are shown.
# cross_encoder's video side is seq_transformer's (its fusion scores video-text pairs).
QA_SAME_AS = {"text_prompt": "seq_transformer", "cross_encoder": "seq_transformer"}


def rows_of(workdir: str):
  """The run's metrics.jsonl rows, read as the trainer reads them (a cut-off last line
  dropped, any other bad line an error)."""
  from vlx.train.metrics_writer import read_metrics  # pylint: disable=g-import-not-at-top
  return read_metrics(workdir)


def run(spec: str, workdir: str, flags) -> float:
  """One `python -m vlx.main` run (its output to workdir/log.txt); returns its wall time."""
  os.makedirs(workdir, exist_ok=True)
  cmd = [sys.executable, "-m", "vlx.main", f"--config={CONFIG}:{spec}", f"--workdir={workdir}",
         *flags]
  print("$", " ".join(cmd[1:]), flush=True)
  t = time.time()
  with open(os.path.join(workdir, "log.txt"), "a") as log:
    log.write(f"\n$ {' '.join(cmd[1:])}\n")
    log.flush()
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
  return time.time() - t


def trained(workdir: str) -> bool:
  """Whether the last run in `workdir` trained (a finished workdir is only reported again,
  and its wall time then is not a training time: the row keeps the earlier one)."""
  with open(os.path.join(workdir, "log.txt")) as f:
    return "is complete (checkpoint" not in f.read().split("\n$ ")[-1]


def final_eval(workdir: str, columns=COLUMNS) -> dict:
  evals = [r for r in rows_of(workdir) if any(k in r for _, k in columns)]
  return evals[-1] if evals else {}


def bench(rows, rounds: int, steps: int, out: str) -> dict:
  """row -> clips/s of its train step, every row timed in one process in alternating rounds
  (experiments/bench_steps.py; its output in OUT/bench.log and OUT/bench.json)."""
  specs = {row: f"{CONFIG}:{spec_of(row)}" for row in rows}
  path = os.path.join(out, "bench.json")
  cmd = [sys.executable, os.path.join(ROOT, "experiments", "bench_steps.py"), *specs.values(),
         f"--rounds={rounds}", f"--steps={steps}", f"--json={path}"]
  print("$", " ".join(cmd[1:]), flush=True)
  with open(os.path.join(out, "bench.log"), "w") as log:
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
  with open(path) as f:
    timed = json.load(f)["configs"]
  return {row: timed[spec]["examples_per_s"] for row, spec in specs.items()}


def clips_per_s(workdir: str) -> float:
  """Median training throughput over the logged steps (the first log holds the compile)."""
  speeds = [r["train/examples_per_s"] for r in rows_of(workdir) if "train/examples_per_s" in r]
  return statistics.median(speeds[1:] or speeds) if speeds else float("nan")


def trainable(paradigm: str) -> tuple:
  """(trainable, total) parameters of the paradigm's tiny config (the optimizer's groups)."""
  import jax  # pylint: disable=g-import-not-at-top
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  from vlx import build, config_lib  # pylint: disable=g-import-not-at-top
  from vlx.train.optimizer import num_trainable  # pylint: disable=g-import-not-at-top
  config = config_lib.load_config_file(f"{CONFIG}:{spec_of(paradigm)}")
  model = build.build_model(config)
  batch = {k: v[:1] for k, v in build.dummy_batch(config).items()}
  params = jax.eval_shape(lambda r: nn.meta.unbox(model.init(r, batch, train=False)["params"]),
                          jax.random.key(0))
  total = sum(x.size for x in jax.tree.leaves(params))
  return num_trainable(config.optimizer, params), total


def plot(results, out: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  names = [r["paradigm"] for r in results]
  shown = COLUMNS[:3] + (QA_COLUMNS[1], QA_COLUMNS[3])
  x = np.arange(len(names))
  width = 0.8 / len(shown)
  fig, ax = plt.subplots(figsize=(max(9, 1.1 * len(names)), 4.8))
  for i, (label, key) in enumerate(shown):
    ax.bar(x + (i - (len(shown) - 1) / 2) * width,
           [r["metrics"].get(key, np.nan) for r in results], width, label=label)
  ax.axhline(0.5, color="grey", lw=0.8, ls="--")  # chance on the twins
  ax.axhline(0.9, color="C0", lw=0.8, ls=":")  # issue 20's bar for the best temporal models
  labels = [n.replace("+", "+\n") + f"\n({KIND[n]})" for n in names]
  ax.set_xticks(x, labels, fontsize=7.5)
  ax.set(ylim=(0, 1), ylabel="score", title="Image->video transfer, same data and steps")
  ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=len(shown))
  ax.grid(axis="y", alpha=0.3)
  fig.tight_layout()
  fig.savefig(out, dpi=120)
  print(f"wrote {out}")


def image_dir(out: str, spec: str) -> str:
  """Where the table's image model (variant `spec`) trains, named by its config's steps: a
  finished run of another length there would be resumed to this one, and the rows kept from
  it (matched by this path) would mix image models."""
  from vlx import config_lib  # pylint: disable=g-import-not-at-top
  steps = config_lib.load_config_file(f"{os.path.join(ROOT, CONFIG)}:{spec}").total_steps
  return os.path.join(out, f"{spec.replace(',', '_')}_{steps}")


def steps_flags(steps) -> list:
  """Flags for a run of `steps` steps evaluated and checkpointed once (None: the config's)."""
  return [f"--config.total_steps={steps}", f"--config.eval_every={steps}",
          f"--config.checkpoint_every={steps}"] if steps else []


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--out", default="workdirs/compare_video")
  p.add_argument("--steps", type=int, default=None, help="steps per paradigm (config's)")
  p.add_argument("--qa_steps", type=int, default=None,
                 help="QA / grounding steps per paradigm (config's; 0: none)")
  p.add_argument("--paradigms", default=",".join(DEFAULT_ROWS),
                 help=f"rows to run, comma-separated; known: {', '.join(PARADIGMS)}")
  p.add_argument("--image", default=None, help="a finished image-model run to start from (of "
                 "the config's tiny towers, which the step timing builds)")
  p.add_argument("--data_dir", default=None, help="where the synthetic videos are (made)")
  p.add_argument("--where", action="store_true",
                 help="train the image model as `image,where` (it also learns where shapes are)")
  p.add_argument("--bench_rounds", type=int, default=3,
                 help="rounds of the side-by-side step timing of every row (0: none, the "
                      "rows keep their earlier clips/s)")
  p.add_argument("--bench_steps", type=int, default=10, help="timed steps per row and round")
  args = p.parse_args()
  out = os.path.abspath(args.out)
  data = [f"--config.data.source.data_dir={args.data_dir}"] if args.data_dir else []
  if args.image and args.where:
    raise SystemExit("--where trains the image model; --image names one already trained")
  spec = "image,where" if args.where else "image"
  image = os.path.abspath(args.image) if args.image else image_dir(out, spec)
  if not args.image:
    print(f"image model ({spec}): {run(spec, image, data):.0f} s", flush=True)
  # Rows of an earlier run from the same image model are kept (one table for runs made in
  # turns); a stage run now (retrieval unless --steps 0, QA unless --qa_steps 0) replaces its
  # part of the paradigm's row.
  rows = {}
  previous = os.path.join(out, "results.json")
  if os.path.exists(previous):
    with open(previous) as f:
      rows = {r["paradigm"]: r for r in json.load(f) if r.get("image") == image}
  for paradigm in args.paradigms.split(","):
    if paradigm not in PARADIGMS:
      raise SystemExit(f"unknown paradigm {paradigm!r}; known: {', '.join(PARADIGMS)}")
    row = rows.setdefault(paradigm, dict(paradigm=paradigm, image=image, metrics={}))
    if args.steps != 0:
      workdir = os.path.join(out, paradigm)
      seconds = run(f"{spec_of(paradigm)},image={image}", workdir,
                    data + steps_flags(args.steps))
      row["seconds"] = seconds if trained(workdir) else row.get("seconds", float("nan"))
      row["metrics"] = {k: v for k, v in row["metrics"].items() if k.startswith(QA_PREFIXES)}
      row["metrics"].update(final_eval(workdir))
      row.update(train_clips=clips_per_s(workdir), params=trainable(paradigm))
    if args.qa_steps != 0 and paradigm not in QA_SAME_AS:
      qa = os.path.join(out, f"{paradigm}_qa")
      seconds = run(f"{spec_of(paradigm)},qa,image={image}", qa,
                    data + steps_flags(args.qa_steps))
      row["qa_seconds"] = seconds if trained(qa) else row.get("qa_seconds", float("nan"))
      row["metrics"] = {k: v for k, v in row["metrics"].items()
                        if not k.startswith(QA_PREFIXES)}
      row["metrics"].update({k: v for k, v in final_eval(qa, QA_COLUMNS).items()
                             if k.startswith(QA_PREFIXES)})
  for paradigm, same in QA_SAME_AS.items():
    if paradigm in rows and same in rows:
      rows[paradigm]["metrics"].update({k: v for k, v in rows[same]["metrics"].items()
                                        if k.startswith(QA_PREFIXES)})
      rows[paradigm]["qa_same_as"] = same
  results = list(rows.values())
  results.sort(key=lambda r: PARADIGMS.index(r["paradigm"]))
  if args.bench_rounds:
    timed = bench([r["paradigm"] for r in results], args.bench_rounds, args.bench_steps, out)
    for r in results:
      r["bench_clips"] = timed[r["paradigm"]]
  header = ["paradigm", "kind", "trainable params", "clips/s (side by side)", "wall s"] + [
      n for n, _ in COLUMNS + QA_COLUMNS] + ["QA wall s"]
  print("\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
  for r in results:
    counts = r.get("params", (float("nan"),) * 2)
    cells = [r["paradigm"], KIND[r["paradigm"]],
             f"{counts[0] / 1e3:.0f}k of {counts[1] / 1e3:.0f}k",
             f"{r['bench_clips']:.0f}" if "bench_clips" in r else "-",
             f"{r.get('seconds', float('nan')):.0f}"] + [
                 f"{r['metrics'][k]:.3f}" if k in r["metrics"] else "-"
                 for _, k in COLUMNS + QA_COLUMNS] + [
                     f"{r['qa_seconds']:.0f}" if "qa_seconds" in r else
                     f"= {r['qa_same_as']}" if "qa_same_as" in r else "-"]
    print("| " + " | ".join(cells) + " |")
  with open(os.path.join(out, "results.json"), "w") as f:
    json.dump(results, f, indent=1)
  try:
    plot(results, os.path.join(out, "compare_video.png"))
  except ImportError:
    print("matplotlib missing: no plot (pip install -e '.[plot]')")


if __name__ == "__main__":
  main()
