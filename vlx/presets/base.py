"""The loop's defaults (every config starts here) and the two smoke shrinks."""

from __future__ import annotations

import ml_collections


def base_config() -> ml_collections.ConfigDict:
  """Keys the loop reads for every model: steps, logging, checkpoints, mesh, optimizer."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.total_steps = 1000
  c.batch_size = 128
  c.accum_steps = 1
  c.log_every = 50
  c.eval_every = 1000
  c.checkpoint_every = 500
  c.keep_checkpoints = 3
  c.resume_step = 0  # 0: the newest checkpoint; N: checkpoint N, later ones moved aside
  c.eval_batch_size = 256
  c.init_from = ""
  # "dst=src,...": take only these top-level param subtrees from init_from, each from the
  # source model's subtree `src` (e.g. "video_tower=video": a VideoMAE encoder into a
  # video-text model); the rest is freshly initialised. "": every param, same names.
  c.init_map = ""
  # A regex (fullmatch on "dst/..." param paths) of params inside init_map's subtrees that the
  # checkpoint may lack and that then keep their initialisation (adapters added to a loaded
  # tower); any other missing param is an error. "": none may be missing.
  c.init_fresh = ""
  # A config spec ("configs/x.py:variant") whose finished run starts this one when init_from
  # is empty: vlx.main trains it first (vlx/train/init_run.py) in a directory beside the
  # workdir named by its config, so later runs reuse it (an image model for video transfer).
  c.init_from_run = ""
  # Dotted config keys that run takes from this one (what must match for init_map to load:
  # the dataset source, the towers both have).
  c.init_from_run_inherits = ("data.source",)
  # Modules to import before building (a family of your own, outside vlx: its registrations).
  c.imports = ()
  # What the train step asks of the model (vlx/train/task.py): "model" = its forward scored
  # by the objectives; a family with more to do (masking, a teacher) registers its own.
  c.task = "model"
  c.curriculum = ml_collections.ConfigDict()  # {name: kwargs}, see vlx/train/curriculum.py
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  c.sharding = ml_collections.ConfigDict(dict(rules=()))  # () -> vlx.parallel.mesh.DEFAULT_RULES
  c.distributed = ml_collections.ConfigDict(dict(
      enabled=False, coordinator_address="", num_processes=1, process_id=0, cpu_collectives=""))
  c.optimizer = ml_collections.ConfigDict(dict(
      name="adamw", lr=1e-3, b1=0.9, b2=0.98, eps=1e-6, weight_decay=0.1,
      weight_decay_regex=r"(kernel|embedding)$", clip_norm=1.0, schedule="cosine",
      warmup_steps=100, end_lr_frac=0.0, param_groups=()))
  return c


def smoke_schedule(c: ml_collections.ConfigDict, total_steps: int = 4) -> None:
  """Seconds, not minutes: a few steps of 16 examples, logged, evaluated and checkpointed."""
  c.update(dict(total_steps=total_steps, batch_size=16, log_every=2, eval_every=total_steps,
                checkpoint_every=total_steps // 2))
  c.optimizer.warmup_steps = 1


def cpu_schedule(c: ml_collections.ConfigDict, *, batch_size: int, total_steps: int,
                 evals: int = 1, lr: float = 1e-3, **optimizer) -> None:
  """The tiny CPU recipes' schedule: AdamW at `lr` (50 warmup steps, weight decay 0.05
  unless `optimizer` says otherwise), logged every 50 steps, evaluated and checkpointed
  `evals` times evenly (the last at the end)."""
  every = total_steps // evals
  c.update(dict(batch_size=batch_size, total_steps=total_steps, log_every=50,
                eval_every=every, checkpoint_every=every, eval_batch_size=128))
  c.optimizer.update(dict(dict(lr=lr, warmup_steps=50, weight_decay=0.05), **optimizer))


def shrink_for_smoke(c: ml_collections.ConfigDict) -> None:
  """An accelerator variant in seconds on a CPU: the same data (dataset, pp ops, splits),
  image and patch size, pooling, dtype, scan/remat, mesh, objectives and evaluators, with
  2-layer 64-wide towers, a batch of 16 (8 devices divide it), 4 steps and small evals."""
  for tower in ("image", "text"):
    c.model[tower].update(dict(width=64, num_heads=2))
    depth_keys = [k for k in ("depth", "unimodal_depth", "multimodal_depth") if k in c.model[tower]]
    c.model[tower].update({k: 2 if k != "multimodal_depth" else 1 for k in depth_keys})
  c.model.embed_dim = 64
  smoke_schedule(c)
  c.eval_batch_size = 16
  for name in c.evals:
    if "limit" in c.evals[name] or c.evals[name].get("type", name) == "retrieval":
      c.evals[name].limit = 32
