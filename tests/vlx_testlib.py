"""Shared helpers for the vlx test files (not a test module itself).

`shapes_data_dir` is a session-scoped fixture: it prepares the 'small'
synthetic_shapes variant once into a TFDS data dir shared by all pytest-xdist
workers (the dataset registry takes a file lock, so concurrent workers wait for
one another) and exports TFDS_DATA_DIR so subprocesses find it too. Test files
import it by name: `from vlx_testlib import shapes_data_dir  # noqa: F401`.
"""

from __future__ import annotations

import fcntl
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import optax
import pytest

from vlx.parallel import mesh as mesh_lib
from vlx.train import trainer
from vlx.train.task import build_task

REPO = pathlib.Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def shared_tmp_root(tmp_path_factory, worker_id):
  """A directory shared by every pytest-xdist worker of the run (each worker has its own
  basetemp; their parent is common)."""
  base = tmp_path_factory.getbasetemp()
  return base.parent if worker_id != "master" else base


@pytest.fixture(scope="session")
def shapes_data_dir(tmp_path_factory, worker_id):
  root = shared_tmp_root(tmp_path_factory, worker_id)
  data_dir = root / "vlx_tfds"
  data_dir.mkdir(exist_ok=True)
  from vlx.data import sources  # pylint: disable=g-import-not-at-top
  # Our own lock around the whole first use: the library's lock does not cover building
  # the TFDS builder, so a second process that starts while the first generates fails
  # (see test_data.py::test_second_process_waiting_on_the_lock_gets_the_dataset).
  with open(root / "vlx_tfds.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      handle = sources.synthetic_shapes(data_dir=str(data_dir), variant="small")
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)
  assert len(handle.split("train")) == 2048 and len(handle.split("test")) == 256
  mp = pytest.MonkeyPatch()
  mp.setenv("TFDS_DATA_DIR", str(data_dir))
  yield str(data_dir)
  mp.undo()


@pytest.fixture(scope="session")
def video_data_dir(shapes_data_dir):
  """The small synthetic_video variant (256/64 videos) beside the small shapes: generated
  once per test run (the library's lock covers its build) and shared by the video tests."""
  from vlx import registry  # pylint: disable=g-import-not-at-top
  registry.DATASETS.get("synthetic_video")(data_dir=shapes_data_dir, variant="small")
  return shapes_data_dir


@pytest.fixture(scope="session")
def shapes_handle(shapes_data_dir):
  from vlx.data import sources  # pylint: disable=g-import-not-at-top
  return sources.synthetic_shapes(data_dir=shapes_data_dir, variant="small")


def suite_xla_flags() -> str:
  """The suite's XLA compile settings (tests/conftest.py), without a device count: what the
  processes the tests start (vlx.main runs, notebook kernels) compile with."""
  return os.environ.get("VLX_TEST_XLA_FLAGS", "--xla_backend_optimization_level=0")


def subprocess_env(num_devices: int = 1, **extra) -> Dict[str, str]:
  env = dict(os.environ)
  # Not the test process's flags (a device count there would override num_devices): the
  # suite's compile settings only (tests/conftest.py).
  env["XLA_FLAGS"] = suite_xla_flags()
  env.update(JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES=str(num_devices),
             TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
  env.update({k: str(v) for k, v in extra.items()})
  return env


def main_cmd(family: str, workdir, data_dir: Optional[str], *overrides: str,
             variant: str = "smoke") -> List[str]:
  cmd = [PYTHON, "-m", "vlx.main", f"--config=configs/{family}.py:{variant}",
         f"--workdir={workdir}"]
  if data_dir is not None:
    cmd.append(f"--config.data.source.data_dir={data_dir}")
  return cmd + list(overrides)


def run_main(family: str, workdir, data_dir: Optional[str], *overrides: str,
             num_devices: int = 1, timeout: float = 300, check: bool = True,
             variant: str = "smoke", env: Optional[Dict[str, str]] = None
             ) -> subprocess.CompletedProcess:
  """`python -m vlx.main` on `configs/<family>.py:<variant>` (`env`: instead of
  subprocess_env(num_devices), e.g. one that puts a user's module on PYTHONPATH)."""
  proc = subprocess.run(main_cmd(family, workdir, data_dir, *overrides, variant=variant),
                        cwd=REPO, env=env or subprocess_env(num_devices), capture_output=True,
                        text=True, timeout=timeout)
  if check and proc.returncode != 0:
    raise AssertionError(f"vlx.main exited {proc.returncode}\nstderr tail:\n"
                         f"{proc.stderr[-4000:]}")
  return proc


def read_metrics(workdir) -> List[dict]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]


def train_losses(workdir) -> Dict[int, float]:
  """step -> train/loss; fails on a step logged twice."""
  rows = [r for r in read_metrics(workdir) if "train/loss" in r]
  steps = [r["step"] for r in rows]
  assert len(steps) == len(set(steps)), f"duplicate steps in metrics.jsonl: {steps}"
  return {r["step"]: r["train/loss"] for r in rows}


def checkpoint_steps(workdir) -> List[int]:
  """Finished orbax step dirs (orbax writes `<step>.orbax-checkpoint-tmp-*` then renames)."""
  d = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(d):
    return []
  return sorted(int(n) for n in os.listdir(d) if n.isdigit())


def restore_state(workdir, step):
  """The train state (params, opt_state, extras, step, rng) of `workdir`'s step-`step`
  checkpoint, on the host."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  mngr = ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")))
  try:
    return jax.device_get(mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.PyTreeRestore()))["state"])
  finally:
    mngr.close()


def sigkill_after_checkpoint(proc: subprocess.Popen, workdir, min_step: int, timeout_s: float,
                             log_path=None) -> None:
  """Waits for a finished checkpoint of step >= `min_step`, then SIGKILLs `proc`'s process group
  (start it with `start_new_session=True`); fails if the run ends or stalls first."""
  def log_tail():
    return "\n" + pathlib.Path(log_path).read_text()[-3000:] if log_path else ""
  try:
    deadline = time.time() + timeout_s
    # A finished orbax step dir is renamed into place, so it appears only once complete.
    while not any(s >= min_step for s in checkpoint_steps(workdir)):
      assert proc.poll() is None, (
          f"run ended (rc {proc.returncode}) before a step-{min_step} checkpoint" + log_tail())
      assert time.time() < deadline, f"no step-{min_step} checkpoint in {timeout_s} s"
      time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
  finally:
    if proc.poll() is None:
      os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
  assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"


def no_evals() -> Sequence[str]:
  return ("--config.evals={}",)


# One layer per tower (configs/clip.py:smoke has 4 image and 3 text layers): the same code
# paths (a tower's layers are one Block, unrolled in a loop: vlx/models/layers.py) for under
# half the train step's compile time, which is most of a short run's cost on a CPU. For
# tests whose subject is the loop, the workdir or the mesh, not the depth; the README's
# smoke runs (test_main_smoke.py) keep the config as written.
SHALLOW_CLIP = ("--config.model.image.depth=1", "--config.model.text.depth=1")


# ---- In-process train steps on a chosen mesh (sharding-equivalence tests) ------------------


def one_train_step(config, model, state, mesh, tx, batch, accum_steps=1, full_state=False,
                   skip_frozen=True):
  """The trainer's jitted step on `mesh` (state resharded there) -> (new params, metrics).
  `batch` may be a list of batches of one shape: the step runs on each in turn, compiled
  once (metrics of the last). `skip_frozen=False`: gradients for the config's frozen groups
  too (a test whose `tx` is plain SGD reads every gradient off the update)."""
  batches = batch if isinstance(batch, (list, tuple)) else [batch]
  batch = batches[0]
  rules = mesh_lib.rules_from_config(config.sharding)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    abstract = jax.eval_shape(lambda r: model.init(
        r, {k: v[:1] for k, v in batch.items()}, train=False)["params"], jax.random.key(0))
    param_shardings = mesh_lib.logical_to_shardings(abstract, mesh, rules)
  rep = mesh_lib.replicated(mesh)
  shardings = state.replace(
      step=rep, params=param_shardings, rng=rep, nonfinite=rep,
      opt_state=mesh_lib.like_param_shardings(state.opt_state, state.params, param_shardings,
                                              mesh),
      extras=build_task(config, model).extras_shardings(param_shardings))
  state = jax.device_put(state, shardings)
  # As the trainer builds it: no gradient computed for the config's frozen groups.
  step_fn = trainer.step_fn_for(config, build_task(config, model), tx,
                                optax.constant_schedule(1.0), state.params, skip_frozen,
                                accum_steps=accum_steps)
  batch_shardings = {k: mesh_lib.batch_sharding(mesh, v.ndim) for k, v in batch.items()}
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    jitted = jax.jit(step_fn, in_shardings=(shardings, batch_shardings),
                     out_shardings=(shardings, rep))
    new_state = state
    for one in batches:
      new_state, metrics = jitted(new_state, mesh_lib.global_batch(one, mesh))
  assert int(new_state.nonfinite) == 0
  # Params really live sharded on the mesh (not silently replicated everywhere).
  if mesh.size > 1:
    specs = {tuple(x.sharding.spec) for x in jax.tree.leaves(new_state.params)}
    assert any(any(a is not None for a in spec) for spec in specs), specs
  if full_state:
    return jax.device_get(new_state), jax.device_get(metrics)
  return jax.device_get(new_state.params), jax.device_get(metrics)


def mesh_of(data, fsdp, tensor, n):
  return mesh_lib.make_mesh(ml_collections.ConfigDict(dict(data=data, fsdp=fsdp, tensor=tensor)),
                            devices=jax.devices()[:n])


def assert_trees_close(a, b, atol, rtol=0.0, what=""):
  flat_a = jax.tree_util.tree_flatten_with_path(a)[0]
  flat_b = jax.tree.leaves(b)
  assert len(flat_a) == len(flat_b)
  for (path, x), y in zip(flat_a, flat_b):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=rtol,
                               err_msg=f"{what} {jax.tree_util.keystr(path)}")


def random_paligemma(vision: dict, text: dict, image_token_index: int):
  """A tiny random HF `PaliGemmaForConditionalGeneration` (torch), every weight perturbed so
  no mis-mapped tensor hides behind an initializer's zeros or ones -> (model, the torch
  generator, to draw more from the same stream). The decoder's weights move most: a random
  decoder with small weights and a tied head answers by repeating the prompt's last token
  (the tied head is the embedding itself: perturbed once, still tied)."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  cfg = transformers.PaliGemmaConfig(vision_config=vision, text_config=text,
                                     image_token_index=image_token_index, projection_dim=32)
  torch.manual_seed(0)
  model = transformers.PaliGemmaForConditionalGeneration(cfg).eval()
  g = torch.Generator().manual_seed(0)
  with torch.no_grad():
    for name, p in model.named_parameters():
      p.add_(torch.randn(p.shape, generator=g) * (0.5 if "language_model" in name else 0.2))
  return model, g


def gemma_sentencepiece(path, texts: Sequence[str], vocab_size: int) -> None:
  """A sentencepiece model in Gemma's layout (<pad> 0, <eos> 1, <bos> 2, <unk> 3, the newline
  one piece, identity normalisation, no dummy prefix) trained on `texts`, written to `path`."""
  import io  # pylint: disable=g-import-not-at-top
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top
  buf = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(texts), model_writer=buf, vocab_size=vocab_size, model_type="bpe",
      pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>",
      bos_piece="<bos>", unk_piece="<unk>", user_defined_symbols=["\n"],
      normalization_rule_name="identity", add_dummy_prefix=False,
      remove_extra_whitespaces=False, hard_vocab_limit=False, num_threads=1, minloglevel=2)
  with open(path, "wb") as f:
    f.write(buf.getvalue())
