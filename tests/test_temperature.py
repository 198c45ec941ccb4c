"""The contrastive temperature is bounded by clamping the parameter after each update (as
open_clip does), not inside the loss:

* a temperature-only run that starts above the bound (where momentum leaves a parameter
  clamped inside the loss) falls back to the scale the data wants, for CLIP, ALIGN and ITC;
* at exactly ln 100 the gradient is the loss's own, not half of it;
* the projection itself: first matching regex, both bounds, exact landing on the bound, and
  a bound that matches no parameter is refused.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from vlx import registry
from vlx.presets.base import base_config
from vlx.objectives.combine import build_objectives
from vlx.objectives.dense_contrastive import softmax_contrastive_dense
from vlx.train.optimizer import make_optimizer

LN100 = float(np.log(100.0))


def _embeddings(b=32, d=16, noise=1.5, seed=0):
  """Image/text pairs that match only loosely: the loss is lowest at a modest scale."""
  rng = np.random.default_rng(seed)
  unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
  img = unit(rng.normal(size=(b, d)))
  txt = unit(img + noise * unit(rng.normal(size=(b, d))) / np.sqrt(d) * 4)
  return jnp.asarray(img, jnp.float32), jnp.asarray(txt, jnp.float32)


def _optimizer_config(lr):
  cfg = base_config().optimizer
  with cfg.unlocked():
    cfg.update(dict(lr=lr, warmup_steps=0, schedule="constant", clip_norm=0.0))
  return cfg


def _temperature_only_run(objectives, log_scale0, steps=150, lr=0.05):
  """`steps` AdamW updates of the logit scale alone on fixed embeddings, through the
  config's objectives and make_optimizer -> the log scale after each step."""
  img, txt = _embeddings()
  loss_fn = build_objectives(ml_collections.ConfigDict(objectives))
  params = {"logit_scale": jnp.float32(log_scale0)}
  tx, _ = make_optimizer(_optimizer_config(lr), params, total_steps=steps,
                         param_bounds=loss_fn.param_bounds)

  def step(carry, _):
    p, opt = carry
    grads = jax.grad(lambda q: loss_fn({"img_emb": img, "txt_emb": txt, **q}, {})[0])(p)
    updates, opt = tx.update(grads, opt, p)
    p = optax.apply_updates(p, updates)
    return (p, opt), p["logit_scale"]

  _, trace = jax.jit(lambda p: jax.lax.scan(step, (p, tx.init(p)), None, length=steps))(params)
  return np.asarray(trace)


def _best_log_scale(label_smoothing=0.0):
  img, txt = _embeddings()
  grid = np.linspace(0.0, LN100, 461)
  losses = jax.vmap(lambda s: softmax_contrastive_dense(img, txt, s, label_smoothing))(grid)
  return float(grid[int(np.argmin(np.asarray(losses)))])


@pytest.mark.parametrize("name,smoothing", [("clip", 0.0), ("align", 0.1), ("itc", 0.0)])
def test_scale_started_above_the_bound_falls_to_what_the_data_wants(name, smoothing):
  best = _best_log_scale(smoothing)
  assert best < np.log(20.0), best  # the data wants a scale far below the bound
  trace = _temperature_only_run({name: dict(weight=1.0, max_scale=100.0)}, LN100 + 0.5)
  assert (trace <= LN100).all(), trace.max()  # projected from the first update on
  assert trace[0] == np.float32(LN100)       # ... onto the bound itself
  assert np.exp(trace[-1]) < 20.0, np.exp(trace[-1])
  np.testing.assert_allclose(trace[-1], best, atol=0.15)


def test_gradient_at_the_bound_is_not_halved():
  img, txt = _embeddings()
  want = jax.grad(softmax_contrastive_dense, argnums=2)(img, txt, jnp.float32(LN100))
  assert abs(float(want)) > 1e-3
  for name in ("clip", "align", "itc"):
    kwargs = {"label_smoothing": 0.0} if name == "align" else {}
    loss_fn = registry.OBJECTIVES.get(name)(max_scale=100.0, **kwargs)
    got = jax.grad(lambda s, f=loss_fn: f({"img_emb": img, "txt_emb": txt, "logit_scale": s},
                                         {})[0])(jnp.float32(LN100))
    np.testing.assert_allclose(float(got), float(want), rtol=1e-5, err_msg=name)


def test_bounds_are_declared_by_the_temperature_objectives_only():
  bound = ("logit_scale", None, pytest.approx(LN100))
  for name in ("clip", "align", "itc"):
    assert build_objectives(ml_collections.ConfigDict({name: 1.0})).param_bounds == (bound,)
  assert build_objectives(ml_collections.ConfigDict({"siglip": 1.0})).param_bounds == ()
  both = build_objectives(ml_collections.ConfigDict({"clip": 1.0, "captioning": 1.0}))
  assert both.param_bounds == (bound,)


def test_param_bounds_project_after_the_update():
  params = {"logit_scale": jnp.float32(4.0), "enc": {"w": jnp.zeros(3), "b": jnp.zeros(3)}}
  grads = {"logit_scale": jnp.float32(-1.0), "enc": {"w": jnp.full(3, -1.0),
                                                     "b": jnp.full(3, 1.0)}}
  cfg = _optimizer_config(lr=1.0)
  with cfg.unlocked():
    cfg.param_bounds = (("enc/w", -0.5, 0.25),)
  tx, _ = make_optimizer(cfg, params, total_steps=4,
                         param_bounds=(("logit_scale", None, LN100), ("enc/.*", -0.5, 9.0)))
  new = optax.apply_updates(params, tx.update(grads, tx.init(params), params)[0])
  assert float(new["logit_scale"]) == np.float32(LN100)  # lands exactly on the bound
  np.testing.assert_array_equal(np.asarray(new["enc"]["w"]), 0.25)  # the config's, first
  np.testing.assert_array_equal(np.asarray(new["enc"]["b"]), -0.5)  # the lower bound
  with pytest.raises(ValueError, match="no parameter matches.*nothing"):
    make_optimizer(cfg, params, total_steps=4, param_bounds=(("nothing", 0.0, 1.0),))
