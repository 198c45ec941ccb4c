"""The training loop, read top to bottom: mesh, input, model, sharded state, compiled
step, checkpoints, evals, loop. Every model family runs through this one file."""

from __future__ import annotations

import copy
import logging
import os
import time
from typing import Dict

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from vlx import config_checks, registry
from vlx.build import (abstract_params, batch_keys, build_model, dummy_batch, fit_vocab,
                       import_components)
from vlx.data import pipeline, sources
from vlx.evals.common import EvalContext
from vlx.parallel import mesh as mesh_lib
from vlx.train import checkpoint as ckpt_lib
from vlx.train import workdir as workdir_lib
from vlx.train.metrics_writer import MetricsWriter
from vlx.train.optimizer import frozen_mask, make_optimizer, num_trainable
from vlx.train.step import TrainState, make_train_step
from vlx.train.task import DEFAULT_TASK, build_task, check_evaluators


class NonFiniteLossError(RuntimeError):
  """Raised when an update produced NaN/Inf: the run stops and names the checkpoint to
  resume from (see "Loop" in `train`)."""


def state_shardings(config, model, tx, mesh, rules, boxed_abstract=None, task=None):
  """(abstract TrainState with shardings, TrainState of shardings): what a step compiles
  against, without materializing anything (memory analysis, AOT compiles)."""
  task = task or build_task(config, model)
  if boxed_abstract is None:
    boxed_abstract = abstract_params(config, model, mesh, rules)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    param_shardings = mesh_lib.logical_to_shardings(boxed_abstract, mesh, rules)
    unboxed = mesh_lib.unbox(boxed_abstract)
    abstract_opt = jax.eval_shape(tx.init, unboxed)
    opt_shardings = mesh_lib.like_param_shardings(abstract_opt, unboxed, param_shardings, mesh)
    rep = mesh_lib.replicated(mesh)
    shardings = TrainState(step=rep, params=param_shardings, opt_state=opt_shardings, rng=rep,
                           nonfinite=rep, extras=task.extras_shardings(param_shardings))
    scalar = jax.ShapeDtypeStruct((), jnp.int32)
    abstract = TrainState(step=scalar, params=unboxed, opt_state=abstract_opt,
                          rng=jax.eval_shape(lambda: jax.random.key(0)), nonfinite=scalar,
                          extras=jax.eval_shape(task.init_extras, unboxed))
  abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          abstract, shardings)
  return abstract, shardings


def create_state(config, model, tx, mesh, rules, boxed_abstract=None, task=None):
  """Shapes first: eval_shape -> shardings -> jit(init, out_shardings): no full copy on one device."""
  task = task or build_task(config, model)
  batch = {k: v[:1] for k, v in dummy_batch(config).items()}

  def init_boxed(rng):
    params_rng, state_rng = jax.random.split(rng)
    return model.init(params_rng, batch, train=False)["params"], state_rng

  _, shardings = state_shardings(config, model, tx, mesh, rules, boxed_abstract, task)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    def init(rng):
      params, state_rng = init_boxed(rng)
      params = nn.meta.unbox(params)
      return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                        opt_state=tx.init(params), rng=state_rng,
                        nonfinite=jnp.zeros((), jnp.int32),
                        extras=task.init_extras(params))

    state = jax.jit(init, out_shardings=shardings)(jax.random.key(config.seed))
  return state, shardings


def step_fn_for(config, task, tx, schedule, params, skip_frozen: bool = True,
                accum_steps=None):
  """The config's train step function: `make_train_step` with no gradient computed for the
  config's frozen groups (lr_mult 0). Every caller that mirrors a run builds it here, so a
  benchmark or test cannot drift from what the trainer trains (`skip_frozen=False`: those
  gradients computed and thrown away, for a test that reads every gradient; `accum_steps`:
  the config's unless given)."""
  frozen = frozen_mask(config.optimizer, params) if skip_frozen else None
  return make_train_step(task, tx, schedule, accum_steps or config.accum_steps, frozen=frozen)


def compile_train_step(config, task, tx, schedule, mesh, rules, state, shardings,
                       skip_frozen: bool = True):
  """The train step as a run compiles it: `step_fn_for`, jitted over `mesh` with the state's
  shardings, the batch sharded on its batch axes and the state donated, AOT-compiled for
  `dummy_batch`'s shapes (`state` may be abstract). Returns (compiled, batch_shardings,
  compile seconds)."""
  step_fn = step_fn_for(config, task, tx, schedule, state.params, skip_frozen)
  dummy = dummy_batch(config)
  batch_shardings = {k: mesh_lib.batch_sharding(mesh, v.ndim) for k, v in dummy.items()}
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    jitted = jax.jit(step_fn, in_shardings=(shardings, batch_shardings),
                     out_shardings=(shardings, mesh_lib.replicated(mesh)),
                     donate_argnums=(0,))
    abstract_batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=batch_shardings[k])
                      for k, v in dummy.items()}
    t = time.time()
    compiled = jitted.lower(state, abstract_batch).compile()
  return compiled, batch_shardings, time.time() - t


def _memory_report(compiled) -> Dict[str, float]:
  try:
    m = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except
    return {}
  if m is None:
    return {}
  mib = lambda x: round(x / 2**20, 2)  # noqa: E731
  return {"arguments_mib": mib(m.argument_size_in_bytes), "outputs_mib": mib(m.output_size_in_bytes),
          "temp_mib": mib(m.temp_size_in_bytes), "aliased_mib": mib(m.alias_size_in_bytes)}


def _flops(compiled, num_devices: int) -> float:
  """Whole-step FLOPs (XLA reports per device; a scanned layer is counted once, so with
  scan=True this undercounts — experiments/bench_train_step.py has the analytic count)."""
  try:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", 0.0)) * num_devices
  except Exception:  # pylint: disable=broad-except
    return 0.0


def build_evaluators(config, model, mesh, handle, workdir=None):
  ctx = EvalContext(model=model, mesh=mesh, handle=handle, data_config=config.data,
                    batch_size=config.get("eval_batch_size", 256), workdir=workdir)
  evals = {}
  for name, ecfg in config.evals.items():
    kwargs = dict(ecfg)
    kind = kwargs.pop("type", name)
    evals[name] = registry.EVALUATORS.get(kind)(ctx, **kwargs)
  return evals


def run_evals(evals, params, step, writer) -> Dict[str, float]:
  results = {}
  for name, ev in evals.items():
    t = time.time()
    for k, v in ev(params).items():
      results[f"{name}/{k}"] = v
    results[f"{name}/seconds"] = round(time.time() - t, 2)
  if results:
    writer.replace(step, results)
  return results


def resume_point(first_bad: int, saved_steps) -> int:
  """The checkpoint to resume from when update `first_bad` was the first non-finite one
  (0: none precedes the divergence).

  Checkpoint N counts as written before the divergence once an update computed from its
  parameters (update N + 1) had a finite loss and gradient. Update `first_bad` started from
  the parameters after step `first_bad - 1`: that checkpoint may already hold the diverged
  weights (lr=1e30: finite but ~5e29, and every later loss is Inf), so it is not trusted and
  the newest checkpoint at or before `first_bad - 2` is the one to go back to."""
  healthy = [s for s in saved_steps if s <= first_bad - 2]
  return max(healthy) if healthy else 0


def _last_rows(workdir: str, step: int) -> Dict[str, float]:
  """Every metric logged at `step` (a finished run's final training and eval rows)."""
  from vlx.train.metrics_writer import read_metrics  # pylint: disable=g-import-not-at-top
  try:
    rows = read_metrics(workdir)
  except FileNotFoundError:
    return {}
  return {k: v for r in rows if r.get("step") == step for k, v in r.items() if k != "step"}


def train(config, workdir: str, mode: str = "train") -> Dict[str, float]:
  """Trains (and evaluates) `config`, resuming from `workdir` when it holds a checkpoint.

  mode="eval" evaluates the latest checkpoint (or `init_from`) without training and writes
  the results to `eval_metrics.jsonl`, replacing earlier results of that step.

  Nothing in `workdir` is changed until the run is known to resume it: its config.json must
  agree with `config` (workdir.py), and a checkpoint must restore. A workdir whose run is
  finished is left as it is. `config.resume_step=N` resumes from checkpoint N instead of the
  newest, moving the later ones aside (after a divergence; the stop message names N).
  """
  if mode not in ("train", "eval"):
    raise ValueError(f"unknown mode {mode!r}; known: train, eval")
  workdir_lib.check_is_directory(workdir)
  # The config's own component modules register their names before any is looked up.
  import_components(config)
  # The dataset fixes what the config leaves open (the vocabulary size) before the config is
  # compared with a saved one or written: config.json is the config that ran, and predict
  # builds the model from it.
  handle = sources.load_dataset(config.data)
  given_config = copy.deepcopy(config)  # what a legacy config.json recorded
  fit_vocab(config, handle)
  config_text = workdir_lib.config_text(config)
  ckpt_dir = os.path.join(workdir, "checkpoints")
  if os.path.isdir(ckpt_dir) and any(n.isdigit() for n in os.listdir(ckpt_dir)):
    task_class = registry.TASKS.get(config.get("task", DEFAULT_TASK))
    workdir_lib.check_resumable(workdir, config, given_config,
                                getattr(task_class, "retired_config_keys", ()),
                                getattr(task_class, "added_config_keys", None))

  # ---- Mesh and sharding rules -------------------------------------------
  mesh = mesh_lib.make_mesh(config.mesh)
  rules = mesh_lib.rules_from_config(config.sharding)
  mesh_lib.check_rules(rules, mesh)
  logging.info("mesh %s over %d devices (%d processes)", dict(mesh.shape), jax.device_count(),
               jax.process_count())
  if config.batch_size % mesh_lib.batch_axis_size(mesh):
    raise ValueError(f"batch_size {config.batch_size} is not divisible by the "
                     f"{mesh_lib.batch_axis_size(mesh)} batch shards of mesh {dict(mesh.shape)}")

  # ---- Input --------------------------------------------------------------
  # One global data order whatever the process count; each process reads only the rows of
  # each global batch that its devices hold.
  rows = mesh_lib.process_batch_rows(mesh, config.batch_size)
  data_iter = pipeline.TrainIterator(
      handle, config.data.train_split, config.data.pp_train, len(rows),
      seed=config.seed, num_threads=config.data.num_threads, prefetch=config.data.prefetch,
      global_batch_size=config.batch_size, rows=rows, keys=batch_keys(config),
      shuffle_block=config.data.get("shuffle_block", 1))

  # ---- Model, objectives, optimizer, state ---------------------------------
  model = build_model(config)
  task = build_task(config, model)
  check_evaluators(config, task)
  boxed_abstract = abstract_params(config, model, mesh, rules)
  tx, schedule = make_optimizer(config.optimizer, mesh_lib.unbox(boxed_abstract),
                                config.total_steps, param_bounds=task.param_bounds)
  state, shardings = create_state(config, model, tx, mesh, rules, boxed_abstract, task)
  num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params))
  logging.info("model %s: %.2fM parameters, %.2fM trainable", config.model.name,
               num_params / 1e6, num_trainable(config.optimizer, state.params) / 1e6)

  if mode == "eval" and not os.path.isdir(ckpt_dir) and not config.init_from:
    raise ValueError(f"mode=eval: no checkpoint in {workdir} and no init_from")
  os.makedirs(workdir, exist_ok=True)
  ckpt = ckpt_lib.Checkpointer(ckpt_dir, keep=config.keep_checkpoints,
                               cleanup_tmp=mode == "train")
  start_step = 0
  resume_step = int(config.get("resume_step", 0)) or None
  if ckpt.latest_step() is not None:
    abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                            state, shardings)
    try:
      state, data_state, start_step, damaged = ckpt.restore(abstract, step=resume_step)
    except Exception:
      # Close orbax's background threads first: left open, they print a traceback at exit.
      ckpt.close()
      raise
    data_iter.set_state(data_state)
    if mode == "train" and start_step >= config.total_steps:
      ckpt.close()
      logging.info("the run in %s is complete (checkpoint %d, total_steps=%d): nothing to do; "
                   "--mode=eval evaluates it again, a larger --config.total_steps trains on",
                   workdir, start_step, config.total_steps)
      return _last_rows(workdir, start_step)
    if mode == "train":
      # The resumed run writes these steps again: move the old ones out of its way.
      ckpt.set_aside(damaged, "damaged")
      ckpt.set_aside([s for s in ckpt.all_steps() if s > start_step], "after-resume-step")
  elif resume_step is not None:
    ckpt.close()
    raise ckpt_lib.CheckpointError(f"resume_step={resume_step}: {ckpt_dir} holds no checkpoint")
  elif config.init_from:
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state.params)
    params = ckpt_lib.load_params(
        config.init_from, abstract, fresh=state.params,
        mapping=config_checks.parse_init_map(config.get("init_map", "")) or None,
        fresh_regex=config.get("init_fresh", ""))
    # The task's state derived from the params (a copy of them) starts from the loaded
    # weights too, not from the random init.
    state = state.replace(params=params, extras=jax.jit(
        task.init_extras, out_shardings=shardings.extras)(params))
    logging.info("initialized weights from %s", config.init_from)

  if mode == "eval":
    if start_step == 0 and not config.init_from:
      ckpt.close()
      raise ValueError(f"mode=eval: no checkpoint in {workdir} and no init_from")
    if jax.process_index() == 0 and not os.path.exists(os.path.join(workdir, "config.json")):
      workdir_lib.write_config(workdir, config_text)
    writer = MetricsWriter(workdir, resume_step=None, filename="eval_metrics.jsonl",
                           tensorboard=False)
    try:
      return run_evals(build_evaluators(config, model, mesh, handle, workdir), state.params, start_step,
                       writer)
    finally:
      ckpt.close()
      writer.close()

  # ---- The train step, compiled ahead of time --------------------------------
  compiled, _, compile_s = compile_train_step(
      config, task, tx, schedule, mesh, rules, state, shardings)
  memory = _memory_report(compiled)
  step_flops = _flops(compiled, mesh.size)
  logging.info("compiled train step in %.1fs; memory per device: %s; %.3g GFLOP/step",
               compile_s, memory, step_flops / 1e9)

  # The run is known to resume this workdir: now its files may change.
  if jax.process_index() == 0:
    workdir_lib.write_config(workdir, config_text)
  writer = MetricsWriter(workdir, resume_step=start_step)
  if start_step == 0:
    writer.write(0, {f"compile/{k}": v for k, v in memory.items()} | {
        "model/num_params": num_params})
  evals = build_evaluators(config, model, mesh, handle, workdir)

  # ---- Loop ------------------------------------------------------------------
  def check_finite(state):
    """Stops at the first non-finite update (checked at every log and checkpoint step, so
    nothing written after it is saved) and names the checkpoint written before it."""
    first_bad = int(jax.device_get(state.nonfinite))
    if not first_bad:
      return
    ckpt.wait()
    back_to = resume_point(first_bad, ckpt.all_steps())
    where = (f"resume from checkpoint {back_to}, the newest written before it, with "
             f"--config.resume_step={back_to} and a lower learning rate "
             f"(--config.optimizer.lr=..., now {config.optimizer.lr:g})" if back_to else
             "no checkpoint was written before it: start again in a new workdir with a lower "
             f"learning rate (now {config.optimizer.lr:g})")
    raise NonFiniteLossError(
        f"non-finite loss, gradient or parameter first at step {first_bad} (the update from "
        f"step {first_bad - 1}'s parameters); {where}, or check the data")

  final = {}
  bar = tqdm.tqdm(total=config.total_steps, initial=start_step, desc="train", unit="step",
                  disable=jax.process_index() != 0, dynamic_ncols=True)
  last_t, last_step = time.time(), start_step
  step = start_step
  try:
    while step < config.total_steps:
      batch = mesh_lib.global_batch(next(data_iter), mesh)
      with jax.set_mesh(mesh):
        state, metrics = compiled(state, batch)
      step += 1
      bar.update(1)
      if step % config.log_every == 0 or step == config.total_steps:
        metrics = jax.device_get(metrics)
        check_finite(state)
        now = time.time()
        rate = (step - last_step) * config.batch_size / max(now - last_t, 1e-9)
        last_t, last_step = now, step
        metrics = {k: float(v) for k, v in metrics.items()}
        metrics["train/examples_per_s"] = rate
        metrics["data/skipped_records"] = data_iter.counter.count
        if step_flops:
          metrics["train/gflops_per_s"] = rate / config.batch_size * step_flops / 1e9
        writer.write(step, metrics)
        bar.set_postfix(loss=f"{metrics['train/loss']:.4f}")
        final.update(metrics)
      if step % config.checkpoint_every == 0 or step == config.total_steps:
        check_finite(state)
        ckpt.save(step, state, data_iter.get_state())
      if evals and (step % config.eval_every == 0 or step == config.total_steps):
        final.update(run_evals(evals, state.params, step, writer))
  finally:
    bar.close()
    ckpt.close()
    writer.close()
  return final


def summarize(final: Dict[str, float], workdir: str) -> str:
  keys = sorted(k for k in final if not k.endswith("/seconds"))
  lines = [f"  {k}: {final[k]:.4f}" if isinstance(final[k], float) else f"  {k}: {final[k]}"
           for k in keys]
  return ("final metrics:\n" + "\n".join(lines) + f"\noutputs in {os.path.abspath(workdir)}: "
          "metrics.jsonl, tensorboard/, checkpoints/, config.json")


__all__ = ["train", "summarize", "NonFiniteLossError"]
