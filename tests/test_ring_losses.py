"""The ring (chunked) contrastive losses equal the dense ones, in value and gradient.

Also checks the reason the ring exists: its compiled per-device temporary
memory stays far below the dense form's at a large global batch.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from vlx.objectives import contrastive, dense_contrastive, ring

BATCH, DIM = 32, 16
MESHES = [(8, 1, 1), (2, 2, 2), (1, 4, 2)]
LOG_SCALE, BIAS = float(np.log(10.0)), -3.0

# name -> (dense fn, ring fn, number of scalar args after img, txt)
LOSSES = {
    "clip": (dense_contrastive.softmax_contrastive_dense, ring.softmax_contrastive_ring, 1),
    "align": (functools.partial(dense_contrastive.softmax_contrastive_dense, label_smoothing=0.1),
              functools.partial(ring.softmax_contrastive_ring, label_smoothing=0.1), 1),
    "siglip": (dense_contrastive.sigmoid_dense, ring.sigmoid_ring, 2),
}


def _mesh(shape):
  return jax.make_mesh(shape, ("data", "fsdp", "tensor"),
                       axis_types=(jax.sharding.AxisType.Auto,) * 3)


def _embeddings(batch, dim, seed=0):
  def unit(k):
    x = jax.random.normal(k, (batch, dim), jnp.float32)
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)
  k1, k2 = jax.random.split(jax.random.key(seed))
  return unit(k1), unit(k2)


def _args(n_scalars, batch=BATCH, dim=DIM):
  img, txt = _embeddings(batch, dim)
  return (img, txt, jnp.float32(LOG_SCALE), jnp.float32(BIAS))[:2 + n_scalars]


def _batch_sharded(mesh, x):
  return jax.device_put(x, NamedSharding(mesh, P(("data", "fsdp"), None)))


@pytest.mark.parametrize("mesh_shape", MESHES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", list(LOSSES))
def test_ring_matches_dense(name, mesh_shape):
  dense_fn, ring_fn, n_scalars = LOSSES[name]
  args = _args(n_scalars)
  argnums = tuple(range(len(args)))
  want, want_grads = jax.value_and_grad(dense_fn, argnums)(*args)

  mesh = _mesh(mesh_shape)
  with jax.set_mesh(mesh):
    sharded = (_batch_sharded(mesh, args[0]), _batch_sharded(mesh, args[1])) + args[2:]
    got, got_grads = jax.jit(jax.value_and_grad(ring_fn, argnums))(*sharded)

  np.testing.assert_allclose(got, want, rtol=1e-5)
  for label, g, w in zip(["img", "txt", "log_scale", "bias"], got_grads, want_grads):
    np.testing.assert_allclose(g, w, atol=1e-5, rtol=1e-5, err_msg=f"d{label}")


@pytest.mark.parametrize("name", list(LOSSES))
def test_ring_without_batch_axes_falls_back_to_dense(name):
  dense_fn, ring_fn, n_scalars = LOSSES[name]
  args = _args(n_scalars)
  np.testing.assert_allclose(ring_fn(*args), dense_fn(*args), rtol=1e-6)
  with jax.set_mesh(_mesh((1, 1, 8))):  # only tensor parallel: no batch ring to run
    np.testing.assert_allclose(jax.jit(ring_fn)(*args), dense_fn(*args), rtol=1e-6)


def _objective(name, **kwargs):
  """The registered objective factory; straight from contrastive.py if the
  registry's lazy imports of other (possibly unfinished) vlx modules fail."""
  try:
    from vlx import registry  # pylint: disable=g-import-not-at-top
    factory = registry.OBJECTIVES.get(name)
  except ImportError:
    factory = {"clip": contrastive.clip_objective, "align": contrastive.align_objective,
               "siglip": contrastive.siglip_objective}[name]
  return factory(**kwargs)


@pytest.mark.parametrize("name", list(LOSSES))
def test_chunked_objective_matches_dense(name):
  mesh = _mesh((2, 2, 2))
  img, txt = _embeddings(BATCH, DIM, seed=1)
  outputs = {"img_emb": img, "txt_emb": txt, "logit_scale": jnp.float32(LOG_SCALE),
             "logit_bias": jnp.float32(BIAS)}

  def loss_and_grads(fn, outs):
    return jax.jit(jax.value_and_grad(lambda o: fn(o, {})[0]))(outs)

  want, want_grads = loss_and_grads(_objective(name, chunked=False), outputs)
  with jax.set_mesh(mesh):
    sharded = dict(outputs, img_emb=_batch_sharded(mesh, img), txt_emb=_batch_sharded(mesh, txt))
    got, got_grads = loss_and_grads(_objective(name, chunked=True), sharded)
    _, metrics = jax.jit(lambda o: _objective(name, chunked=True)(o, {}))(sharded)

  np.testing.assert_allclose(got, want, rtol=1e-5)
  for key in outputs:
    np.testing.assert_allclose(got_grads[key], want_grads[key], atol=1e-5, rtol=1e-5,
                               err_msg=key)
  np.testing.assert_allclose(metrics["temperature"], 0.1, rtol=1e-5)


@pytest.mark.parametrize("name", ["align", "siglip"])
def test_ring_memory_does_not_grow_like_global_logits(name):
  """At B=4096 on 8 devices the dense [B, B] logits cost 64 MiB; the ring's
  temporaries must stay around a few [B/8, B/8] blocks (1 MiB each), forward
  and backward alike."""
  dense_fn, ring_fn, n_scalars = LOSSES[name]
  batch, n_dev = 4096, 8
  mesh = _mesh((n_dev, 1, 1))
  emb = jax.ShapeDtypeStruct((batch, DIM), jnp.float32,
                             sharding=NamedSharding(mesh, P(("data", "fsdp"), None)))
  scalars = (jax.ShapeDtypeStruct((), jnp.float32),) * n_scalars
  argnums = tuple(range(2 + n_scalars))

  def temp_bytes(fn):
    with jax.set_mesh(mesh):
      compiled = jax.jit(jax.value_and_grad(fn, argnums)).lower(emb, emb, *scalars).compile()
    return compiled.memory_analysis().temp_size_in_bytes

  dense, chunked = temp_bytes(dense_fn), temp_bytes(ring_fn)
  block = (batch // n_dev) ** 2 * 4
  print(f"{name} B={batch}: dense temp {dense} B, ring temp {chunked} B")
  assert chunked < dense / 4, (dense, chunked)
  assert chunked < 4 * block, (chunked, block)


def test_ring_refuses_a_batch_that_does_not_split_evenly():
  """Going dense here would silently bring back the [B, B] logits the ring avoids."""
  img, txt = _embeddings(12, DIM)
  with jax.set_mesh(_mesh((8, 1, 1))):
    for fn, scalars in ((ring.softmax_contrastive_ring, (LOG_SCALE,)),
                        (ring.sigmoid_ring, (LOG_SCALE, BIAS))):
      with pytest.raises(ValueError, match=r"batch 12 does not split evenly over the 8 devices"):
        jax.jit(fn)(img, txt, *map(jnp.float32, scalars))


# ---- Through the trainer's step ------------------------------------------------------------


def _step_config(family, chunked):
  from vlx import config_lib  # pylint: disable=g-import-not-at-top
  from vlx_testlib import REPO  # pylint: disable=g-import-not-at-top
  config = config_lib.load_config_file(f"{REPO}/configs/{family}.py:smoke")
  over = {"model.image.depth": 1, "model.text.depth": 1, "batch_size": 32,
          "model.image.width": 32, "model.text.width": 32, "model.embed_dim": 16,
          "model.image.num_heads": 2, "model.text.num_heads": 2,
          "data.image_size": 16, "data.max_len": 8, "model.text.max_len": 8}
  config_lib.apply_overrides(config, [(k, str(v)) for k, v in over.items()])
  with config.objectives.unlocked():  # the CPU configs leave `chunked` at its default
    config.objectives[family]["chunked"] = chunked
  return config


def _step_batch(config, seed=0):
  rng = np.random.default_rng(seed)
  b, s, l = config.batch_size, config.data.image_size, config.data.max_len
  text = rng.integers(3, config.model.text.vocab_size, (b, l)).astype(np.int32)
  text[:, -1] = 2  # EOS
  return {"image": rng.uniform(-1, 1, (b, s, s, 3)).astype(np.float32), "text": text}


@pytest.mark.parametrize("family", ["clip"])  # siglip's ring: same path, +2 step compiles
def test_ring_through_train_step_equals_dense(family):
  """The trainer's step with `chunked=True` on a 2x2x2 mesh (a 4-device batch ring, tensor
  parallel beside it): the loss, gradient norm and updated params of the dense objective."""
  import optax  # pylint: disable=g-import-not-at-top
  from vlx.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  from vlx import build  # pylint: disable=g-import-not-at-top
  from vlx.train import trainer  # pylint: disable=g-import-not-at-top
  from vlx_testlib import assert_trees_close, mesh_of, one_train_step  # pylint: disable=g-import-not-at-top
  tx = optax.sgd(1.0)  # params - grads: compares the gradients themselves
  runs = {}
  for chunked in (False, True):
    config = _step_config(family, chunked)
    model = build.build_model(config)
    state, _ = trainer.create_state(config, model, tx, mesh_of(1, 1, 1, 1),
                                    mesh_lib.rules_from_config(config.sharding))
    state = jax.device_get(state)
    runs[chunked] = one_train_step(config, model, state, mesh_of(2, 2, 2, 8), tx,
                                   _step_batch(config))
  (p_dense, m_dense), (p_ring, m_ring) = runs[False], runs[True]
  acc = f"train/{family}/i2t_acc"  # the ring reports no [B, B] metrics: it really ran
  assert acc in m_dense and acc not in m_ring
  np.testing.assert_allclose(m_ring["train/loss"], m_dense["train/loss"], rtol=1e-5)
  np.testing.assert_allclose(m_ring["train/grad_norm"], m_dense["train/grad_norm"], rtol=1e-4)
  assert_trees_close(p_ring, p_dense, atol=2e-5, rtol=1e-4, what=f"{family} ring vs dense")
  moved = max(float(np.abs(a - b).max()) for a, b in
              zip(jax.tree.leaves(jax.device_get(state.params)), jax.tree.leaves(p_dense)))
  assert moved > 1e-3


@pytest.mark.parametrize("family", ["clip", "align", "siglip", "coca"])
def test_accelerator_configs_use_the_ring(family):
  """Batch 4096 on accelerators: the contrastive term runs as the ring, the CPU recipe dense."""
  from vlx import config_lib  # pylint: disable=g-import-not-at-top
  from vlx_testlib import REPO  # pylint: disable=g-import-not-at-top
  name = "clip" if family == "coca" else family
  for size in ("s32", "b16", "b16,smoke"):
    config = config_lib.load_config_file(f"{REPO}/configs/{family}.py:{size}")
    assert config.objectives[name].get("chunked") is True, (family, size)
  tiny = config_lib.load_config_file(f"{REPO}/configs/{family}.py:tiny")
  assert not tiny.objectives[name].get("chunked", False)


def test_fusion_itc_is_the_shared_contrastive_objective():
  """The fusion models' ITC is CLIP's loss (dense and ring); ALBEF's distillation targets
  stay dense-only and say so."""
  img, txt = _embeddings(BATCH, DIM, seed=2)
  outputs = {"img_emb": img, "txt_emb": txt, "logit_scale": jnp.float32(LOG_SCALE)}
  clip = jax.jit(lambda o: _objective("clip")(o, {})[0])(outputs)
  itc = jax.jit(lambda o: _objective("itc")(o, {})[0])(outputs)
  np.testing.assert_allclose(itc, clip, rtol=1e-6)
  mesh = _mesh((2, 2, 2))
  with jax.set_mesh(mesh):
    sharded = dict(outputs, img_emb=_batch_sharded(mesh, img), txt_emb=_batch_sharded(mesh, txt))
    ring_itc = jax.jit(lambda o: _objective("itc", chunked=True)(o, {})[0])(sharded)
  np.testing.assert_allclose(ring_itc, clip, rtol=1e-5)
  teacher = dict(outputs, teacher={"img_emb": txt, "txt_emb": img})
  with pytest.raises(ValueError, match="distillation targets need chunked=False"):
    _objective("itc", chunked=True, distill_alpha=0.4)(teacher, {})
