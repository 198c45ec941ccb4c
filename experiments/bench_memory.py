"""Bytes per device of the compiled train step as the mesh grows: FSDP and the ring loss.

Compiles (never runs) vlx's train step for the ViT-B/16 CLIP config (`configs/clip.py:b16`,
bf16 compute, scanned + remat'd layers) on FSDP meshes of 1, 2, 4 and 8 devices, at a fixed
global batch, and prints per device:
- parameters + optimizer state (from the state's shardings: exact bytes of each shard),
- temporaries (XLA's memory analysis of the compiled step).
Then the contrastive loss alone at global batch 4096 (embedding 512), dense vs chunked
(the `jax.shard_map` ring), forward + backward, temporaries per device on 1 and 8 devices.

    JAX_NUM_CPU_DEVICES=8 python experiments/bench_memory.py [--batch 256] [--loss_batch 4096]

The figures are XLA:CPU's plan for emulated devices: the sharding (what each device holds)
is the one a TPU/GPU mesh gets, temporaries differ by backend fusion. On one device the
"chunked" loss is the dense one (the ring needs more than one shard). The last line is one
JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from vlx import config_lib  # noqa: E402
from vlx.objectives.combine import build_objectives  # noqa: E402
from vlx.parallel import mesh as mesh_lib  # noqa: E402
from vlx import build  # noqa: E402
from vlx.train import trainer  # noqa: E402
from vlx.train.optimizer import make_optimizer  # noqa: E402
from vlx.train.task import build_task  # noqa: E402

MIB = 2 ** 20


def shard_bytes(abstract_tree) -> int:
  """Bytes one device holds of a tree of sharded ShapeDtypeStructs."""
  total = 0
  for x in jax.tree.leaves(abstract_tree):
    shape = x.sharding.shard_shape(x.shape) if x.sharding is not None else x.shape
    total += int(np.prod(shape)) * getattr(x.dtype, "itemsize", 0)
  return total


def step_memory(config, devices):
  mesh = mesh_lib.make_mesh(config.mesh, devices)
  rules = mesh_lib.rules_from_config(config.sharding)
  model = build.build_model(config)
  task = build_task(config, model)
  boxed = build.abstract_params(config, model, mesh, rules)
  tx, schedule = make_optimizer(config.optimizer, mesh_lib.unbox(boxed), config.total_steps,
                                param_bounds=task.param_bounds)
  abstract, shardings = trainer.state_shardings(config, model, tx, mesh, rules, boxed, task)
  compiled, _, _ = trainer.compile_train_step(config, task, tx, schedule, mesh, rules,
                                              abstract, shardings)
  m = trainer._memory_report(compiled)  # pylint: disable=protected-access
  state_bytes = shard_bytes(abstract.params) + shard_bytes(abstract.opt_state)
  return dict(devices=len(devices), params_opt_mib=round(state_bytes / MIB, 1),
              temp_mib=m.get("temp_mib"), arguments_mib=m.get("arguments_mib"))


def loss_memory(devices, batch: int, dim: int, chunked: bool):
  mesh = mesh_lib.make_mesh({"data": -1, "fsdp": 1, "tensor": 1}, devices)
  loss_fn = build_objectives({"clip": {"weight": 1.0, "max_scale": 100.0, "chunked": chunked}})
  sharding = mesh_lib.batch_sharding(mesh, 2)

  def f(img, txt, scale):
    def loss(img, txt, scale):
      return loss_fn({"img_emb": img, "txt_emb": txt, "logit_scale": scale}, {})[0]
    return jax.value_and_grad(loss, argnums=(0, 1, 2))(img, txt, scale)

  emb = jax.ShapeDtypeStruct((batch, dim), jnp.float32, sharding=sharding)
  scale = jax.ShapeDtypeStruct((), jnp.float32, sharding=mesh_lib.replicated(mesh))
  with jax.set_mesh(mesh):
    compiled = jax.jit(f).lower(emb, emb, scale).compile()
  return trainer._memory_report(compiled).get("temp_mib")  # pylint: disable=protected-access


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--batch", type=int, default=256, help="global batch of the train step")
  p.add_argument("--loss_batch", type=int, default=4096)
  p.add_argument("--embed", type=int, default=512)
  p.add_argument("--meshes", default="1,2,4,8")
  args = p.parse_args(argv)
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  config = config_lib.load_config_file(os.path.join(root, "configs", "clip.py") + ":b16")
  with config.unlocked():
    config.batch_size = args.batch
    config.mesh.update(dict(data=1, fsdp=-1, tensor=1))
    config.model.text.vocab_size = 32_000
  sizes = [int(s) for s in args.meshes.split(",")]
  if max(sizes) > jax.device_count():
    raise SystemExit(f"needs {max(sizes)} devices; run with JAX_NUM_CPU_DEVICES={max(sizes)}")
  rows = []
  for n in sizes:
    rows.append(step_memory(config, jax.devices()[:n]))
    print(f"FSDP x{n}: params+opt {rows[-1]['params_opt_mib']:8.1f} MiB/device, "
          f"temporaries {rows[-1]['temp_mib']:8.1f} MiB/device", flush=True)
  loss_rows = {}
  for n in (1, max(sizes)):
    for chunked in (False, True):
      key = f"{'chunked' if chunked else 'dense'}_x{n}"
      loss_rows[key] = loss_memory(jax.devices()[:n], args.loss_batch, args.embed, chunked)
      print(f"contrastive loss B={args.loss_batch} {key}: temporaries {loss_rows[key]} MiB/device",
            flush=True)
  one, last = rows[0], rows[-1]
  result = dict(
      step=rows, loss_temp_mib=loss_rows, batch=args.batch, loss_batch=args.loss_batch,
      fsdp_state_ratio=round(last["params_opt_mib"] / one["params_opt_mib"], 4),
      fsdp_state_ratio_bound=round(1.3 / last["devices"], 4),
      chunked_temp_falls=loss_rows[f"chunked_x{max(sizes)}"] <= loss_rows["chunked_x1"],
      jax=jax.__version__)
  print(json.dumps(result))
  return result


if __name__ == "__main__":
  main()
