"""A model family of one's own, defined entirely here, outside the `vlx` package, trains and
evaluates through the public entry point with no edit to `vlx/`.

This file is the reference that docs/adding_a_family.md quotes: change them together.

What the core asks of a family (the contract this test exercises):
  model      a flax module registered in `registry.MODELS`, built from `config.model`
             (`name` picks it, the other keys are its fields); `__call__(batch, train)`
             returns a dict of arrays; every parameter names its logical axes.
  objective  registered in `registry.OBJECTIVES`: a factory taking its config kwargs and
             returning `(outputs, batch) -> (loss, metrics)` (config.objectives).
  evaluator  registered in `registry.EVALUATORS`: built with the EvalContext and its config
             kwargs, called with the params, returning {metric: float} (config.evals).
  data       a dataset (`registry.DATASETS`) and preprocessing ops (`registry.PP_OPS`) by
             name; `config.data.keys` says which example fields make the batch.
  config     `get_config(arg)` from `vlx.presets.base.base_config()`, with
             `imports=("<this module>",)` so `vlx.main` imports the registrations.
  task       the default `"model"` task (vlx/train/task.py): the step runs the model's forward
             and the objectives; a family that needs more registers a task of its own
             (tests/test_task.py drives the step with one).

The toy family: a patch MLP that tells the colour of a synthetic scene's main shape (8 classes)
from a 16 px image, on the embedded synthetic_shapes data, with a preprocessing op of its own
that turns the scene label into a colour label.

Run through `python -m vlx.main --config=tests/test_toy_family.py:smoke` on a 2x2x2
(data, fsdp, tensor) mesh of 8 CPU devices, 4 steps: ~18 s on a loaded 2-core machine
(~7 s compiling the step, the init and the evaluator, ~8 s importing JAX, flax and
tensorboardX's torch, ~3 s orbax), plus the shared synthetic-shapes fixture.

This file is both the config file and the family's module: `vlx.main` loads it by path for
`get_config`, which already runs its registrations; `config.imports` then imports it by name
(the registry counts the same definition twice as one). In a family of one's own the module
and the config file are separate, and `imports` is what registers the family.
"""

# No `from __future__ import annotations`: vlx.main loads this file by path as a config module
# that is not in sys.modules, and dataclasses (a flax Module is one) then cannot resolve
# string annotations (AttributeError: 'NoneType' object has no attribute '__dict__').
import math
import os
import subprocess

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from vlx import registry
from vlx.data import pipeline
from vlx.evals.common import EvalContext, SplitReader, run_batched
from vlx.presets import base
from vlx.variant import parse_variant
from vlx_testlib import PYTHON, REPO, checkpoint_steps, read_metrics, subprocess_env
from vlx_testlib import shapes_data_dir  # noqa: F401  (fixture)

NUM_COLOURS = 8  # synthetic_shapes: 8 colours x 4 shapes, class label = colour * 4 + shape


# ---- Data: a preprocessing op of the family's own -------------------------------------------


@registry.PP_OPS.register("toy_colour_label")
def toy_colour_label(handle):
  """The scene's class label (colour x shape) -> its colour alone."""
  num_shapes = len(handle.class_names) // NUM_COLOURS

  def fn(ex, rng):
    del rng
    ex["label"] = np.int32(ex["label"] // num_shapes)
    return ex
  return fn


# ---- Model: logical axis names on every parameter ---------------------------------------------


class ToyColourNet(nn.Module):
  """Image -> colour logits: mean of an MLP over 4x4 patches. Each parameter names its logical
  axes (`embed`, `mlp`, `classes`, ...), so config.sharding.rules places it on any mesh."""
  num_classes: int = NUM_COLOURS
  patch: int = 4
  width: int = 32

  @nn.compact
  def __call__(self, batch, train: bool = False):
    del train  # no dropout
    x = batch["image"]
    b, h, w, c = x.shape
    p = self.patch
    x = x.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    x = x.reshape(b, (h // p) * (w // p), p * p * c)
    x = nn.with_logical_constraint(x, ("act_batch", "act_len", None))
    dense = lambda n, axes, name: nn.Dense(  # noqa: E731
        n, name=name,
        kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), axes),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, axes[1:]))
    x = nn.gelu(dense(self.width, ("patch", "embed"), "stem")(x))
    x = nn.gelu(dense(self.width, ("embed", "mlp"), "hidden")(x))
    x = x.mean(axis=1)
    return {"logits": dense(self.num_classes, ("mlp", "classes"), "head")(x)}


registry.MODELS.register("toy_colour_net")(ToyColourNet)


# ---- Objective: reads the model's outputs and the batch ---------------------------------------


@registry.OBJECTIVES.register("toy_xent")
def toy_xent(label_smoothing: float = 0.0):
  """Softmax cross-entropy of `outputs['logits']` against `batch['label']`."""

  def loss_fn(outputs, batch):
    logits = outputs["logits"].astype(jnp.float32)
    targets = optax.smooth_labels(jax.nn.one_hot(batch["label"], logits.shape[-1]),
                                  label_smoothing)
    loss = optax.softmax_cross_entropy(logits, targets).mean()
    return loss, {"accuracy": (logits.argmax(-1) == batch["label"]).mean()}
  return loss_fn


# ---- Evaluator: the params in, metrics out ----------------------------------------------------


@registry.EVALUATORS.register("toy_accuracy")
class ToyAccuracy:
  """Colour accuracy on the test split, read in batches through data.pp_eval."""

  def __init__(self, ctx: EvalContext, split: str = None, limit: int = None):
    self.ctx = ctx
    self.reader = SplitReader(ctx, split or ctx.data_config.test_split, limit=limit)

  def __call__(self, params):
    model = self.ctx.model

    def logits(p, images):
      return model.apply({"params": p}, {"image": images})["logits"]

    def batch_hits(rows):
      images = pipeline.stack(rows, ["image"])["image"]
      pred = run_batched(self.ctx, "toy_logits", logits, params, images,
                         batch_size=self.reader.batch_size).argmax(-1)
      return pred == np.asarray([r["label"] for r in rows])
    return {"accuracy": float(np.concatenate(self.reader.map(batch_hits)).mean())}


# ---- Config: what `python -m vlx.main --config=tests/test_toy_family.py:smoke` runs -----------


def get_config(arg: str = ""):
  variant = parse_variant(arg)  # '' or 'smoke'; anything else is refused with the valid words
  c = base.base_config()
  c.imports = ("test_toy_family",)  # the module whose decorators register the names below
  c.model = ml_collections.ConfigDict(dict(name="toy_colour_net", patch=4, width=32))
  c.objectives = ml_collections.ConfigDict(dict(toy_xent=dict(weight=1.0)))
  c.evals = ml_collections.ConfigDict(dict(colour=dict(type="toy_accuracy", limit=64)))
  c.data = ml_collections.ConfigDict(dict(
      name="synthetic_shapes", source=dict(data_dir="", variant="default", vocab_size=256),
      train_split="train", test_split="test", keys=("image", "label"),
      image_size=16, max_len=32,  # max_len: read by the core even with no text in the batch
      pp_train="decode|resize(16)|value_range(-1,1)|toy_colour_label",
      pp_eval="decode|resize(16)|value_range(-1,1)|toy_colour_label",
      num_threads=1, prefetch=2))
  c.batch_size = 64
  c.total_steps = 200
  c.optimizer.update(dict(lr=3e-3, warmup_steps=10))
  c.mesh.update(dict(data=2, fsdp=2, tensor=2))  # 8 devices: every rule is exercised
  if variant.smoke:
    c.data.source.variant = "small"
    base.smoke_schedule(c, total_steps=4)  # 4 steps of 16, logged every 2, checkpoints 2 and 4
    c.eval_batch_size = 32
  return c


# ---- The tests ---------------------------------------------------------------------------------


def run_vlx_main(workdir, data_dir, *overrides, timeout=300):
  """`python -m vlx.main` on this file's config, 8 CPU devices; tests/ on PYTHONPATH is what
  lets `config.imports` (and this file's own `from vlx_testlib import ...`) find the modules."""
  env = subprocess_env(8)
  env["PYTHONPATH"] = os.pathsep.join(
      p for p in (str(REPO / "tests"), env.get("PYTHONPATH", "")) if p)
  cmd = [PYTHON, "-m", "vlx.main", "--config=tests/test_toy_family.py:smoke",
         f"--workdir={workdir}", f"--config.data.source.data_dir={data_dir}", *overrides]
  return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def test_toy_family_trains_and_evaluates_through_vlx_main(shapes_data_dir, tmp_path):  # noqa: F811
  workdir = tmp_path / "w"
  proc = run_vlx_main(workdir, shapes_data_dir)
  assert proc.returncode == 0, proc.stderr[-4000:]
  rows = read_metrics(workdir)
  train = [r for r in rows if "train/loss" in r]
  assert [r["step"] for r in train] == [2, 4], rows
  assert all(math.isfinite(r["train/loss"]) for r in train), train
  assert all("train/toy_xent/accuracy" in r for r in train), train  # the objective's metric
  colour = [r for r in rows if "colour/accuracy" in r]  # the evaluator's metric
  assert [r["step"] for r in colour] == [4], rows
  assert 0.0 <= colour[0]["colour/accuracy"] <= 1.0
  assert checkpoint_steps(workdir) == [2, 4]


def test_toy_family_params_name_their_logical_axes_and_shard(shapes_data_dir):  # noqa: F811
  """Shapes only: each parameter is logically partitioned, and the default rules put the
  hidden layer over fsdp x tensor of the 2x2x2 mesh (a check a new family should copy)."""
  from vlx import build  # pylint: disable=g-import-not-at-top
  from vlx.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  config = get_config("smoke")
  config.data.source.data_dir = shapes_data_dir
  mesh = mesh_lib.make_mesh(config.mesh)
  rules = mesh_lib.rules_from_config(config.sharding)
  boxed = build.abstract_params(config, build.build_model(config), mesh, rules)
  leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
  assert leaves and all(isinstance(x, nn.LogicallyPartitioned) for x in leaves), leaves
  specs = jax.tree.map(lambda s: tuple(s.spec), mesh_lib.logical_to_shardings(boxed, mesh, rules))
  assert specs["hidden"]["kernel"] == ("fsdp", "tensor"), specs
  assert specs["stem"]["kernel"] == (None, "fsdp"), specs


def test_same_definition_registered_twice_replaces_itself_a_different_one_clashes():
  """vlx.main loads this file by path (for get_config) and imports it by name (config.imports):
  its components are defined twice, which must not count as a name clash."""
  table = registry.Registry("thing")
  module = compile("class Toy: pass\nregister('toy')(Toy)", __file__, "exec")
  for _ in range(2):  # one module's code run twice: a new class object each time
    exec(module, {"__file__": __file__, "register": table.register})  # pylint: disable=exec-used
  table.register("other")(ToyColourNet)
  try:
    table.register("other")(ToyAccuracy)
  except ValueError as e:
    assert "'other' is registered twice" in str(e)
  else:
    raise AssertionError("two different definitions under one name did not clash")


def test_docs_quote_this_file_verbatim():
  """docs/adding_a_family.md walks through this file: each of its Python blocks is a piece of
  it, so the walk-through cannot drift from the code that runs."""
  doc = (REPO / "docs" / "adding_a_family.md").read_text()
  here = (REPO / "tests" / "test_toy_family.py").read_text()
  blocks = doc.split("```python\n")[1:]
  assert len(blocks) >= 6, "the walk-through lost its excerpts"
  for block in (b.split("```")[0] for b in blocks):
    assert block in here, f"docs/adding_a_family.md quotes code not in this file:\n{block}"
