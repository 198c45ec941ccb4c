"""The post-training table of issue 22: pretrain -> CoT SFT -> GRPO -> test-time scaling on the
reasoning videos, beside the baselines, over seeds.

Every stage is a `python -m vlx.main` run of configs/video_lmm.py (each resumes after a kill;
a finished run is reused, so the script can be stopped and started again):

  cot        :tiny              CoT SFT (its `:tiny,pretrain` stage trained first: by the first
                                seed, whose pretrained model every seed starts from)
  answer     :tiny,answer       answer-only SFT on the same questions (matched data)
  grpo       :tiny,grpo         GRPO from the CoT run (rollouts inside the train step)
  continued  :tiny              CoT SFT continued from the CoT run on the `train` split's
                                questions for as many steps as GRPO took (matched data: the
                                same questions, with the program's traces instead of rewards)

Then each is evaluated on the held-out `test` split (`--mode=eval`, the `reasoning_qa`
evaluator): greedy accuracy per question kind, span mIoU and format rate; the CoT model also
with blank frames and with shuffled frames (the baselines of what the question alone and the
frames without their order give); and CoT and GRPO with `--samples` sampled responses per
question (pass@k, majority@k, best-of-k by likelihood, k = 1, 2, 4, ...), the first seed's
also with `--first_seed_samples` (k to 32); and CoT and GRPO greedy with each clip read at
`--test_frames` frames instead of the 8 they were trained on (more, and fewer, frames at test
time: the same questions, split `test_<R>f`), the first seed's CoT model also with its frames
marked by index instead of by their time in the clip (`--config.model.clip_frames=0`: the
marks a model without time marks would give frames past the 8th).

    python experiments/post_training.py [--seeds 0,1,2] [--workdir workdirs/post_training]
        [--samples 8] [--first_seed_samples 32] [--limit 1000]
        [--pretrain_from SEED | --pretrain_each_seed] [--model ft=DIR] [--smoke]
        [--test_frames 4,16,32]

`--model ft=DIR` runs the same stages, baselines and evaluations on an imported PaliGemma
(`python -m vlx.convert --src=HF_PALIGEMMA --out=DIR`, configs/video_lmm.py:ft=DIR: DIR is the
pretrained model, so there is no pretraining stage); sized for an accelerator.

Every seed's SFT stages start from one pretrained model (the first seed's): the seeds measure
post-training. Prints one table (mean and spread over seeds) and writes `table.json` and
`table.md` in the workdir, and `post_training.png`: pass@k / majority@k / best-of-k against k for the CoT and GRPO models,
and GRPO's training curves (reward, share of groups with identical rewards, KL to the
reference, entropy, response length), every seed.
`--smoke`: the `,smoke` variants (seconds a stage), for tests.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs", "video_lmm.py")
KINDS = ("count", "order", "direction", "span")
TRAIN_FRAMES = 8  # configs/video_lmm.py's data.num_frames: the `test` split's clips


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds, one chain each")
  p.add_argument("--workdir", default="workdirs/post_training")
  p.add_argument("--samples", type=int, default=8,
                 help="sampled responses per question for pass@k / majority@k / best-of-k")
  p.add_argument("--first_seed_samples", type=int, default=32,
                 help="the first seed's CoT and GRPO models are also sampled this many times "
                      "a question, for pass@k / majority@k curves to that k (0: not)")
  p.add_argument("--limit", type=int, default=1000, help="held-out questions evaluated")
  p.add_argument("--smoke", action="store_true", help="the ,smoke variants (for tests)")
  p.add_argument("--model", default="tiny",
                 help="tiny (vlx's small model, pretrained here) or ft=DIR (a converted "
                      "PaliGemma)")
  p.add_argument("--pretrain_from", type=int, default=None,
                 help="start every seed's SFT stages from this seed's pretrained model, "
                      "pretrained once (default: the first of --seeds): the seeds measure "
                      "post-training, which in practice starts from one base model")
  p.add_argument("--pretrain_each_seed", action="store_true",
                 help="pretrain every seed's own base model instead (a 12-minute stage more "
                      "per seed on the 2-core CPU)")
  p.add_argument("--test_frames", default="4,16,32",
                 help="comma-separated frame counts to read each test clip at besides the 8 "
                      "of training (more frames at test time; '' for none)")
  p.add_argument("--plot", default=None,
                 help="PNG of the test-time scaling and GRPO curves (default: in the workdir; "
                      "needs matplotlib)")
  args = p.parse_args(argv)
  args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
  try:
    args.test_frames = [int(s) for s in args.test_frames.split(",") if s.strip()]
  except ValueError:
    p.error(f"--test_frames {args.test_frames!r}: comma-separated frame counts")
  if any(r < 1 or r == TRAIN_FRAMES for r in args.test_frames):
    p.error(f"--test_frames: counts >= 1 other than the {TRAIN_FRAMES} of training")
  if not args.seeds or args.samples < 1 or args.limit < 1:
    p.error("need at least one seed, --samples >= 1 and --limit >= 1")
  if args.pretrain_each_seed and args.pretrain_from is not None:
    p.error("--pretrain_from and --pretrain_each_seed exclude each other")
  if args.model != "tiny" and not args.model.startswith("ft="):
    p.error(f"--model {args.model!r}: tiny or ft=DIR")
  if args.model != "tiny":
    # the runs start in the repository: DIR as the user gave it, made absolute here
    args.model = "ft=" + os.path.abspath(os.path.expanduser(args.model[3:]))
    if args.pretrain_each_seed or args.pretrain_from is not None:
      p.error("--model ft=DIR has no pretraining stage: DIR is the pretrained model")
  elif args.pretrain_from is None and not args.pretrain_each_seed:
    args.pretrain_from = args.seeds[0]
  return args


def run_main(variant: str, workdir: str, *overrides: str, mode: str = "train") -> dict:
  """One vlx.main run; -> its final metrics (parsed from the summary it prints). An
  evaluation's metrics are kept in the run's workdir (`post_training_eval-<hash>.json`, by
  command and checkpoint) and reused: a stopped script restarts where it was."""
  cmd = [sys.executable, "-m", "vlx.main", f"--config={CONFIG}:{variant}",
         f"--workdir={workdir}", f"--mode={mode}", *overrides]
  cache = None
  if mode == "eval":
    # a run's own checkpoints, or (a workdir of its own) the last init_from, as vlx.main reads it
    weights = workdir if os.path.isdir(os.path.join(workdir, "checkpoints")) else [
        o.split("=", 1)[1] for o in overrides if o.startswith("--config.init_from=")][-1]
    steps = sorted(int(d) for d in os.listdir(os.path.join(weights, "checkpoints"))
                   if d.isdigit())
    key = json.dumps([variant, list(overrides), steps[-1:]])
    cache = os.path.join(workdir, "post_training_eval-"
                         f"{hashlib.sha256(key.encode()).hexdigest()[:12]}.json")
    if os.path.exists(cache):
      with open(cache) as f:
        print(f"  {mode:5s} {variant:22s} {os.path.basename(workdir):14s}  (kept)", flush=True)
        return json.load(f)
  t0 = time.time()
  # Output to files, not pipes: the run outlives this script if it is stopped (and its log
  # can be watched).
  log_path = f"{os.path.normpath(workdir)}.{mode}.log"
  os.makedirs(os.path.dirname(log_path), exist_ok=True)
  with open(log_path, "w") as log, open(log_path + ".stdout", "w") as out:
    returncode = subprocess.run(cmd, stdout=out, stderr=log, cwd=REPO, check=False).returncode
  with open(log_path + ".stdout") as f:
    stdout = f.read()
  if returncode:
    with open(log_path) as f:
      tail = (f.read().strip().splitlines() or ["no output"])[-1]
    raise SystemExit(f"post_training: {' '.join(cmd[2:])} failed ({returncode}): {tail} "
                     f"(log: {log_path})")
  metrics = {m.group(1): float(m.group(2)) for m in
             re.finditer(r"^  (\S+): (-?[0-9.]+(?:e-?\d+)?)$", stdout, re.M)}
  print(f"  {mode:5s} {variant:22s} {os.path.basename(workdir):14s} {time.time() - t0:7.1f} s",
        flush=True)
  if cache:
    with open(cache, "w") as f:
      json.dump(metrics, f)
  return metrics


def pretrained_dir(args, seed: int) -> str:
  """Where seed `seed`'s CoT run keeps the pretraining stage it started from (a finished run:
  that seed comes first)."""
  from vlx import config_lib  # pylint: disable=g-import-not-at-top
  from vlx.train import init_run  # pylint: disable=g-import-not-at-top
  cot = os.path.join(os.path.abspath(args.workdir), f"seed{seed}", "cot")
  if os.path.exists(os.path.join(cot, "config.json")):
    # the run says where it started (a pretrained run named by an older config's hash too)
    with open(os.path.join(cot, "config.json")) as f:
      where = json.load(f).get("init_from", "")
    if where and os.path.isdir(os.path.join(where, "checkpoints")):
      return where
  config = config_lib.load_config_file(f"{CONFIG}:tiny{',smoke' if args.smoke else ''}")
  config.seed = seed
  where = init_run.init_run_dir(config, init_run.init_run_config(config),
                                os.path.join(os.path.abspath(args.workdir), f"seed{seed}", "cot"))
  if not os.path.isdir(os.path.join(where, "checkpoints")):
    raise SystemExit(f"post_training: --pretrain_from={seed}: no pretrained run in {where} "
                     "(list that seed first in --seeds)")
  return where


def stage_runs(args, seed: int) -> dict:
  """Trains (or reuses) every stage of one seed; -> {stage: (variant, workdir, overrides)}
  (evaluating a run takes the overrides it was trained with)."""
  root = os.path.join(os.path.abspath(args.workdir), f"seed{seed}")
  smoke = ",smoke" if args.smoke else ""
  seed_flag = f"--config.seed={seed}"
  cot_dir = os.path.join(root, "cot")
  sft = (seed_flag,)
  if args.pretrain_from is not None and seed != args.pretrain_from:
    sft += (f"--config.init_from={pretrained_dir(args, args.pretrain_from)}",)
  # GRPO starts from this CoT run (named, so that its chain does not train another one).
  base = args.model
  runs = {"cot": (f"{base}{smoke}", cot_dir, sft),
          "answer": (f"{base},answer{smoke}", os.path.join(root, "answer"), sft),
          "grpo": (f"{base},grpo{smoke}", os.path.join(root, "grpo"),
                   (seed_flag, f"--config.init_from={cot_dir}"))}
  for variant, workdir, overrides in runs.values():
    run_main(variant, workdir, *overrides)
  # Continued SFT: from the CoT run, on the train split, for GRPO's number of steps.
  grpo_steps = json.load(open(os.path.join(runs["grpo"][1], "config.json")))["total_steps"]
  workdir = os.path.join(root, "continued")
  overrides = (seed_flag, f"--config.init_from={cot_dir}", "--config.init_from_run=",
               "--config.data.train_split=train", f"--config.total_steps={grpo_steps}",
               f"--config.checkpoint_every={grpo_steps}", f"--config.eval_every={grpo_steps}")
  run_main(f"{base}{smoke}", workdir, *overrides)
  runs["continued"] = (f"{base}{smoke}", workdir, overrides)
  return runs


def evaluate(args, runs: dict, first: bool = False) -> dict:
  """{row name: metrics} of one seed's runs on the test split (`first`: the first seed, whose
  CoT and GRPO models are also sampled `--first_seed_samples` times)."""
  ev = "--config.evals.reasoning_qa."
  limit = f"{ev}limit={args.limit}"
  rows = {}
  for name, (variant, workdir, overrides) in runs.items():
    rows[name] = run_main(variant, workdir, *overrides, limit, mode="eval")
  cot_variant, cot_dir, cot_overrides = runs["cot"]
  for frames in ("blank", "shuffled"):
    rows[f"cot, {frames} frames"] = run_main(cot_variant, cot_dir, *cot_overrides, limit,
                                             f"{ev}frames={frames}", mode="eval")
  for frames in args.test_frames:
    split = f"{ev}split=test_{frames}f"
    for name in ("cot", "grpo"):
      variant, workdir, overrides = runs[name]
      rows[f"{name}, {frames} frames"] = run_main(variant, workdir, *overrides, limit, split,
                                                  mode="eval")
    if first and frames > TRAIN_FRAMES:
      # the CoT model's weights under index marks: a model config of its own, so evaluated
      # from a workdir of its own (`init_from`: the weights are the same)
      rows[f"cot, {frames} frames, index marks"] = run_main(
          cot_variant, f"{cot_dir}_index_marks", *cot_overrides, limit, split,
          f"--config.init_from={cot_dir}", "--config.init_from_run=",
          "--config.model.clip_frames=0", mode="eval")
  counts = [args.samples] if args.samples > 1 else []
  if first and args.first_seed_samples > max(counts + [1]):
    counts.append(args.first_seed_samples)
  for count in counts:
    for name in ("cot", "grpo"):
      variant, workdir, overrides = runs[name]
      rows[f"{name}, {count} samples"] = run_main(
          variant, workdir, *overrides, limit, f"{ev}num_samples={count}", mode="eval")
  return rows


def table(per_seed: list) -> list:
  """Rows of (name, {column: (mean, min, max), "seeds": how many}) over the seeds that have
  the row (the first seed's many-sample evaluations: that seed only)."""
  names = list(dict.fromkeys(name for seed in per_seed for name in seed))
  out = []
  for name in names:
    have = [seed[name] for seed in per_seed if name in seed]
    cols = {}
    for key in have[0]:
      k = key.split("/", 1)[-1]
      vals = [row[key] for row in have if key in row]
      cols[k] = (float(np.mean(vals)), float(np.min(vals)), float(np.max(vals)))
    cols["seeds"] = len(have)
    out.append((name, cols))
  return out


def shown(name: str, cols: dict, seeds) -> str:
  """A row's name, with how many seeds it has when fewer than the table's."""
  n = cols.get("seeds", len(seeds))
  return name if n == len(seeds) else f"{name} ({n} of {len(seeds)} seeds)"


def print_table(rows, seeds):
  columns = ["accuracy"] + [f"accuracy_{k}" for k in KINDS] + ["span_miou", "format_rate"]
  print(f"\nreasoning videos, held-out test split; mean (min-max) over seeds {seeds}")
  print(f"{'':34s}" + "".join(f"{c.replace('accuracy_', ''):>20s}" for c in columns))
  for name, cols in rows:
    cells = "".join(f"{cols[c][0]:8.3f} ({cols[c][1]:.2f}-{cols[c][2]:.2f})" if c in cols
                    else f"{'':>20s}" for c in columns)
    print(f"{shown(name, cols, seeds):34s}{cells}")
  for name, cols in rows:
    scaling = sorted((c for c in cols if "_at_" in c or c.startswith("best_of")),
                     key=lambda c: (re.sub(r"\d+", "", c), int(re.findall(r"\d+", c)[0])))
    if scaling:
      print(f"\n{shown(name, cols, seeds)}: " + ", ".join(f"{c} {cols[c][0]:.3f}"
                                                        for c in scaling))


def markdown_table(rows, seeds) -> str:
  """The same table for docs/ (mean, min-max over seeds)."""
  columns = ["accuracy"] + [f"accuracy_{k}" for k in KINDS] + ["span_miou", "format_rate"]
  head = ["row"] + [c.replace("accuracy_", "") for c in columns]
  lines = [f"Mean (min-max) over seeds {seeds}.", "", "| " + " | ".join(head) + " |",
           "|" + "---|" * len(head)]
  for name, cols in rows:
    cells = [f"{cols[c][0]:.3f} ({cols[c][1]:.3f}-{cols[c][2]:.3f})" if c in cols else ""
             for c in columns]
    lines.append(f"| {shown(name, cols, seeds)} | " + " | ".join(cells) + " |")
  for name, cols in rows:
    for prefix, title in SCALING:
      keys = sorted((c for c in cols if c.startswith(prefix)),
                    key=lambda c: int(re.findall(r"\d+", c)[0]))
      if keys:
        lines.append(f"\n{shown(name, cols, seeds)}, {title}: " + ", ".join(
            f"k={re.findall(r'[0-9]+', c)[0]} {cols[c][0]:.3f}" for c in keys))
  return "\n".join(lines) + "\n"


SCALING = (("pass_at", "pass@k"), ("majority_at", "majority@k"),
           ("best_of", "best-of-k (likelihood)"))
CURVES = ("train/rollout/reward", "train/rollout/zero_std_fraction", "train/grpo/kl",
          "train/grpo/entropy", "train/rollout/response_length")


def plot(args, per_seed: list, out: str) -> None:
  """Test-time scaling (mean over seeds, min-max band) and GRPO's curves (one line a seed)."""
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top
  except ImportError:
    print("post_training: no matplotlib (pip install -e '.[plot]'): no plot")
    return
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  fig, axes = plt.subplots(2, 5, figsize=(21, 7))
  sampled = [name for name in dict.fromkeys(n for seed in per_seed for n in seed)
             if name.endswith("samples")]
  for ax, (prefix, title) in zip(axes[0], SCALING):
    for name in sampled:
      have = [seed for seed in per_seed if name in seed]
      keys = sorted((k for k in have[0][name] if k.split("/")[-1].startswith(prefix)),
                    key=lambda k: int(re.findall(r"\d+", k.split("/")[-1])[0]))
      ks = [int(re.findall(r"\d+", k.split("/")[-1])[0]) for k in keys]
      vals = np.array([[seed[name][k] for k in keys] for seed in have])
      label = name if len(have) == len(per_seed) else f"{name} (first seed)"
      ax.plot(ks, vals.mean(0), marker="o", label=label)
      ax.fill_between(ks, vals.min(0), vals.max(0), alpha=0.2)
    ax.set_xscale("log", base=2)
    ax.set_title(title)
    ax.set_xlabel("k (sampled responses per question)")
    ax.set_ylabel("accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  frames_at_test(axes[0][3], per_seed)
  for ax, key in zip(list(axes[0][4:]) + list(axes[1]), CURVES):
    for seed in args.seeds:
      path = os.path.join(os.path.abspath(args.workdir), f"seed{seed}", "grpo", "metrics.jsonl")
      with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
      pts = [(r["step"], r[key]) for r in rows if key in r]
      if pts:
        ax.plot(*zip(*pts), label=f"seed {seed}")
    ax.set_title(f"GRPO: {key.split('/', 1)[1]}")
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  axes[1][4].axis("off")
  fig.suptitle(f"reasoning videos: test-time scaling on {args.limit} held-out questions "
               f"(mean, min-max over seeds {args.seeds}) and GRPO training")
  fig.tight_layout()
  fig.savefig(out, dpi=90)
  print(f"wrote {out}")


def frames_at_test(ax, per_seed: list) -> None:
  """Greedy accuracy against the frames each test clip is read at (8: the `test` split)."""
  names = dict.fromkeys(n for seed in per_seed for n in seed)
  for model, style in (("cot", "-"), ("grpo", "-"), ("cot, index marks", "--")):
    points = {}
    for name in names:
      m = re.fullmatch(r"(cot|grpo), (\d+) frames(, index marks)?", name)
      if m and (m.group(1) + (m.group(3) or "")) == model:
        points[int(m.group(2))] = name
    if not points:
      continue
    if "index" not in model:
      points[TRAIN_FRAMES] = model
    counts = sorted(points)
    vals = np.array([[seed[points[r]]["reasoning_qa/accuracy"] for r in counts]
                     for seed in per_seed if all(points[r] in seed for r in counts)])
    if not len(vals):
      continue
    ax.plot(counts, vals.mean(0), style, marker="o", label=f"{model} ({len(vals)} seeds)")
    ax.fill_between(counts, vals.min(0), vals.max(0), alpha=0.2)
  ax.axvline(TRAIN_FRAMES, color="grey", lw=0.8)
  ax.set_xscale("log", base=2)
  ax.set_title("frames at test time (trained on 8)")
  ax.set_xlabel("frames each test clip is read at")
  ax.set_ylabel("accuracy (greedy)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)


def main(argv=None):
  args = parse_args(argv)
  per_seed = []
  for seed in args.seeds:
    print(f"seed {seed}", flush=True)
    runs = stage_runs(args, seed)
    per_seed.append(evaluate(args, runs, first=seed == args.seeds[0]))
    report(args, per_seed)  # after every seed: the seeds so far, should the rest not finish
  return table(per_seed)


def report(args, per_seed):
  """Prints the table of the seeds done so far; writes table.json and the plot."""
  seeds = args.seeds[:len(per_seed)]
  rows = table(per_seed)
  print_table(rows, seeds)
  os.makedirs(args.workdir, exist_ok=True)
  with open(os.path.join(args.workdir, "table.json"), "w") as f:
    json.dump({"seeds": seeds, "per_seed": per_seed, "rows": {n: c for n, c in rows}}, f,
              indent=1)
  with open(os.path.join(args.workdir, "table.md"), "w") as f:
    f.write(markdown_table(rows, seeds))
  plot(argparse.Namespace(**{**vars(args), "seeds": seeds}), per_seed,
       args.plot or os.path.join(args.workdir, "post_training.png"))


if __name__ == "__main__":
  main()
