"""The fusion stacks' `scan` and `remat` options compute the unrolled stack's function.

Every fusion stack's BERT layers are `layers.Block(norm="post")` in a `layers.Encoder`, and
LXMERT's / ViLBERT's cross-modal layers are stacked by the same helpers, so one option turns
on scan (or remat) for all of them. The unrolled params, restacked along the scanned
`layers` axis, must give the same outputs under scan; remat must give the same outputs and
gradients with the same params. Tiny widths and depths: the file is its compiles, ~30 s on
the loaded 2-core machine.
"""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from vlx.convert import hf_fusion
from vlx.models import layers
from vlx_testlib import assert_trees_close


def _fusion(stack, **over):
  # Two layers in the stack under test (scan over one layer would not show their order), one
  # elsewhere: every layer adds compile time.
  depths = dict(albef=dict(text_depth=2, visual_depth=0, fusion_depth=2),
                lxmert=dict(text_depth=1, visual_depth=1, fusion_depth=2))[stack]
  return dict(vocab_size=20, width=16, num_heads=2, mlp_dim=32, max_len=8, **depths, **over)


def _inputs():
  k = jax.random.split(jax.random.key(1), 3)
  ids = jax.random.randint(k[0], (2, 6), 0, 20)
  t_mask = jnp.array([[1] * 6, [1] * 4 + [0] * 2], bool)
  feats = jax.random.normal(k[1], (2, 5, 16))
  geometry = jax.random.uniform(k[2], (2, 5, 5))
  v_mask = jnp.array([[1] * 5, [1] * 3 + [0] * 2], bool)
  return ids, jnp.zeros_like(ids), t_mask, feats, geometry, v_mask


def _init(model, args):
  return nn.meta.unbox(jax.jit(model.init)(jax.random.key(0), *args)["params"])


def _structure(model, args):
  """The params' tree structure, traced only (no compile)."""
  return jax.tree.structure(nn.meta.unbox(
      jax.eval_shape(model.init, jax.random.key(0), *args)["params"]))


def _restack(tree):
  """Unrolled params -> the scanned layout: `layer_{i}` -> `layers`, `cross_{i}` -> `cross`."""
  if not isinstance(tree, dict):
    return tree
  out = {k: _restack(v) for k, v in tree.items()}
  for prefix, scanned in (("layer_", "layers"), ("cross_", "cross")):
    names = sorted((k for k in out if k.startswith(prefix) and k[len(prefix):].isdigit()),
                   key=lambda k: int(k[len(prefix):]))
    if names:
      out[scanned] = jax.tree.map(lambda *xs: jnp.stack(xs), *[out.pop(k) for k in names])
  return out


# lxmert: post-norm Encoders and the cross-modal layers under scan; albef: an Encoder whose
# Blocks cross-attend (memory and its mask broadcast to every scanned layer). ViLBERT and the
# single stream use the same two helpers (a few more seconds of compiling each).
@pytest.mark.parametrize("stack", ("lxmert", "albef"))
def test_scanned_fusion_stack_equals_unrolled(stack):
  args = _inputs()
  unrolled = hf_fusion.FusionEncoder(stack, _fusion(stack))
  scanned = hf_fusion.FusionEncoder(stack, _fusion(stack, scan=True))
  params = _init(unrolled, args)
  stacked = _restack(params)
  assert "layers" in stacked["stack"]["text_encoder"]
  if stack == "lxmert":
    assert "cross" in stacked["stack"]
  else:
    assert "layers" in stacked["stack"]["fusion"]
  assert jax.tree.structure(stacked) == _structure(scanned, args)
  assert_trees_close(jax.jit(scanned.apply)({"params": stacked}, *args),
                     jax.jit(unrolled.apply)({"params": params}, *args), atol=1e-5,
                     what=f"{stack} scan vs unrolled")


def test_remat_fusion_stack_gives_the_same_outputs_and_gradients():
  args = _inputs()
  plain = hf_fusion.FusionEncoder("albef", _fusion("albef"))
  remat = hf_fusion.FusionEncoder("albef", _fusion("albef", remat="full"))
  params = _init(plain, args)
  assert jax.tree.structure(params) == _structure(remat, args)

  def loss(model):
    return lambda p: sum(jnp.mean(x ** 2) for x in model.apply({"params": p}, *args).values())

  def value_and_grad(model):
    return jax.jit(jax.value_and_grad(loss(model)))(params)

  # remat is on (every layer is a checkpoint in the traced step), and changes nothing computed.
  def checkpoints(model):  # the primitive is `remat2` in JAX 0.10 (`checkpoint` in others)
    return len(re.findall(r"\b(?:checkpoint|remat2?)\[", str(jax.make_jaxpr(loss(model))(params))))

  assert (checkpoints(plain), checkpoints(remat)) == (0, 4)  # text 2 + fusion 2 layers
  assert_trees_close(value_and_grad(remat), value_and_grad(plain), atol=1e-6, rtol=1e-4,
                     what="albef remat vs plain")


def test_unknown_norm_is_one_value_error():
  x = jnp.zeros((1, 3, 8))
  for module in (layers.Encoder(1, 2, 16, norm="sandwich"), layers.Block(2, 16, norm="sandwich")):
    with pytest.raises(ValueError, match="unknown norm 'sandwich'; known: pre, post"):
      module.init(jax.random.key(0), x)
