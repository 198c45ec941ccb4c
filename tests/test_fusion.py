"""Fusion encoders: their pieces compute what they claim, on one device and on eight.

* ROI-align of a linear feature map gives the map's value at each bin's centre;
* BERT masking never touches padding, [CLS], EOS or OSCAR's tags;
* ITM hard negatives sampled on an 8-device mesh equal a single device's, follow the
  softmax of the similarities, and never pick the positive or an identical caption;
* the EMA (momentum) parameters after a sharded step are exactly decay * old + (1 - decay)
  * new, the step's teacher is the EMA parameters' momentum_passes, and the teacher's soft
  targets enter ITC and MLM as ALBEF's distillation says;
* one train step of ALBEF, UNITER and LXMERT (one per kind of stack) is the same on 1 device
  and on a 2x2x2 data x fsdp x tensor mesh, at the dual encoders' tolerance
  (test_sharding_equivalence.py).

The 2x2x2 step once differed (gradient norm 0.2-0.5%; loss exact). Bisected with UNITER, one
task at a time, per-leaf gradients against one device: only VQA's three-questions-per-image
pass was wrong (ITC, MLM, grounding exact to 1e-6); only on 2x2x2 (1x2x2, 2x1x2, 2x4x1
exact), only with both `embed` on fsdp and `heads`/`mlp` on tensor (dropping either rule:
exact; the activation rules and `vocab` do not matter); wrong still with the visual tokens'
gradient stopped (so the text-side fused pass over the B * 3 rows), with the repeat written
as a broadcast, and with explicit batch constraints on the repeated rows. A BERT layer or
text embedding alone at 48 x 32 rows did not reproduce it. Three fused passes over the B
images (FusionModel.vqa_logits) are exact, so that is the form the model uses.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vlx import config_lib, registry
from vlx.data import pipeline
from vlx.families.fusion import task as FT
from vlx.objectives import hard_negatives as HN
from vlx.families.fusion.layers import roi_align
from vlx.objectives.combine import build_objectives
from vlx.parallel import mesh as mesh_lib
from vlx import build
from vlx.train import trainer
from vlx.families.fusion.task import ema_update
from vlx_testlib import (REPO, assert_trees_close, mesh_of, one_train_step,  # noqa: F401
                         shapes_data_dir)

FAMILIES = ("albef", "uniter", "oscar", "vilbert", "lxmert")
# The sharded-step comparison runs one family per kind of stack (each ~75 s of CPU): ALBEF
# (patches, cross-attention fusion, the EMA teacher), UNITER (single stream over regions, MRM)
# and LXMERT (two streams with cross-modal layers). OSCAR is UNITER's stack plus tag tokens and
# ViLBERT LXMERT's with co-attention weights: the same sublayers, sharded by the same rules
# (their golden shardings are in tests/golden/), so they are left to save suite time.
STEP_FAMILIES = ("albef", "uniter", "lxmert")


def _config(family, data_dir, **over):
  config = config_lib.load_config_file(f"{REPO}/configs/{family}.py:tiny,smoke")
  small = {"data.source.data_dir": data_dir, "batch_size": 16,
           "model.image.depth": 1, "model.image.width": 32, "model.image.num_heads": 2,
           "model.fusion.width": 32, "model.fusion.num_heads": 2, "model.fusion.mlp_dim": 64,
           "model.embed_dim": 16,
           # One layer of each kind the family has (compile time grows with every layer).
           "model.fusion.text_depth": 1,
           "model.fusion.fusion_depth": min(1, int(config.model.fusion.fusion_depth)),
           "model.fusion.visual_depth": min(1, int(config.model.fusion.visual_depth))}
  small.update(over)
  config_lib.apply_overrides(config, [(k, str(v)) for k, v in small.items()])
  return config


def _batch(config, handle, n=None):
  keys = build.batch_keys(config)
  data = pipeline.load_task_arrays(handle, config.data.train_split, config.data.pp_train, keys,
                                   limit=n or config.batch_size)
  return {k: data[k] for k in keys}


def test_roi_align_samples_a_linear_map_at_bin_centres():
  h = w = 8
  yy, xx = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
  # Channel 0 = y, channel 1 = x, in image-normalized units (pixel centres at (k + .5) / 8).
  fmap = np.stack([yy / h, xx / w], -1)[None].astype(np.float32)
  boxes = np.array([[[0.1, 0.2, 0.7, 0.6], [0.25, 0.25, 0.75, 0.75]]], np.float32)
  out = np.asarray(roi_align(jnp.asarray(fmap), jnp.asarray(boxes), output_size=2, sampling=2))
  assert out.shape == (1, 2, 4, 2)
  for r, (y0, x0, y1, x1) in enumerate(boxes[0]):
    centres = [(y0 + (y1 - y0) * (i + .5) / 2, x0 + (x1 - x0) * (j + .5) / 2)
               for i in range(2) for j in range(2)]
    np.testing.assert_allclose(out[0, r], np.array(centres), atol=1e-6)


def test_mlm_masking_never_touches_padding_specials_or_tags(shapes_data_dir):
  config = _config("oscar", shapes_data_dir)
  model = build.build_model(config)
  handle = trainer.sources.load_dataset(config.data)
  build.fit_vocab(config, handle)
  batch = _batch(config, handle)
  # text_inputs reads no parameter: abstract ones (no compile, no compute) bind the module.
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), batch, train=False))
  ids, types, mask, maskable = model.apply(variables, batch["text"], batch["tags"],
                                           method="text_inputs")
  ids, types, maskable = map(np.asarray, (ids, types, maskable))
  vocab = config.model.text.vocab_size
  special = (ids == 0) | (ids == 2) | (ids == vocab)          # pad, EOS, [CLS]
  assert special[:, 0].all() and (ids[:, 0] == vocab).all()   # [CLS] first
  assert not (maskable & special).any() and not (maskable & (types == 1)).any()
  assert (maskable == (~special & (types == 0))).all()
  # prob=1 picks every maskable position and nothing else.
  new, targets = FT.mask_tokens(jnp.asarray(ids), jax.random.key(1), 1.0, vocab + 1, vocab,
                               jnp.asarray(maskable))
  new, targets = np.asarray(new), np.asarray(targets)
  assert ((targets != FT.IGNORE) == maskable).all()
  np.testing.assert_array_equal(targets[maskable], ids[maskable])
  np.testing.assert_array_equal(new[~maskable], ids[~maskable])
  # BERT's 80 / 10 / 10 over many positions.
  big = jnp.full((64, 256), 7, jnp.int32)
  new, targets = FT.mask_tokens(big, jax.random.key(2), 0.5, vocab + 1, vocab,
                               jnp.ones(big.shape, bool))
  new, picked = np.asarray(new), np.asarray(targets) != FT.IGNORE
  assert abs(picked.mean() - 0.5) < 0.02
  kinds = new[picked]
  assert abs((kinds == vocab + 1).mean() - 0.8) < 0.02
  assert abs(((kinds != vocab + 1) & (kinds != 7)).mean() - 0.1) < 0.02
  random = kinds[(kinds != vocab + 1) & (kinds != 7)]
  assert random.min() >= 3 and random.max() < vocab  # ordinary tokens, never a special id


def test_hard_negatives_equal_on_one_and_eight_devices():
  b = 32
  rng = np.random.default_rng(0)
  sims = rng.normal(size=(b, b)).astype(np.float32) * 3
  tokens = rng.integers(3, 50, (b, 6)).astype(np.int32)
  tokens[5] = tokens[9]        # two identical captions: never each other's negative
  fn = lambda s, t, k: HN.hard_negatives(s, k, t)  # noqa: E731
  key = jax.random.key(7)
  one = jax.jit(fn)(sims, tokens, key)
  mesh = mesh_of(2, 2, 2, 8)
  row = mesh_lib.batch_sharding(mesh, 2)
  with jax.set_mesh(mesh):
    eight = jax.jit(fn, in_shardings=(row, row, None))(
        jax.device_put(sims, row), jax.device_put(tokens, row), key)
  for a, c in zip(one, eight):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(c))
  neg_t, neg_i = map(np.asarray, one)
  assert (neg_t != np.arange(b)).all() and (neg_i != np.arange(b)).all()
  assert neg_t[5] != 9 and neg_t[9] != 5 and neg_i[5] != 9 and neg_i[9] != 5
  # The draw follows softmax(similarity) over the allowed captions: 4,000 draws for row 0.
  keys = jax.random.split(jax.random.key(3), 4000)
  draws = np.asarray(jax.vmap(lambda k: HN.hard_negatives(jnp.asarray(sims), k)[0][0])(keys))
  p = np.exp(sims[0] - sims[0].max())
  p[0] = 0
  p /= p.sum()
  freq = np.bincount(draws, minlength=b) / len(draws)
  assert freq[0] == 0
  np.testing.assert_allclose(freq, p, atol=0.03)


def test_ema_update_and_distillation_targets():
  """The EMA rule on a toy tree, and the teacher's soft targets entering ITC and MLM: with
  alpha = 0 the loss is the hard-target one, with alpha = 1 it is the teacher's alone."""
  np.testing.assert_array_equal(np.asarray(ema_update({"a": jnp.ones(3)}, {"a": jnp.zeros(3)},
                                                      0.9)["a"]), np.full(3, 0.9, np.float32))
  rng = np.random.default_rng(0)
  unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
  emb = lambda: jnp.asarray(unit(rng.normal(size=(6, 8))), jnp.float32)  # noqa: E731
  outputs = {"img_emb": emb(), "txt_emb": emb(), "logit_scale": jnp.log(10.0),
             "mlm_logits": jnp.asarray(rng.normal(size=(6, 5, 11)), jnp.float32),
             "mlm_targets": jnp.asarray(rng.integers(0, 11, (6, 5)), jnp.int32)}
  outputs["teacher"] = {"img_emb": emb(), "txt_emb": emb(),
                        "mlm_logits": jnp.asarray(rng.normal(size=(6, 5, 11)), jnp.float32)}
  for name in ("itc", "mlm"):
    make = registry.OBJECTIVES.get(name)
    hard = float(make()(outputs, {})[0])
    assert abs(float(make(distill_alpha=0.4)(outputs, {})[0]) - hard) > 1e-3, name
    soft = float(make(distill_alpha=1.0)(outputs, {})[0])
    if name == "itc":
      logits = 10.0 * np.asarray(outputs["img_emb"] @ outputs["txt_emb"].T)
      sims = 10.0 * np.asarray(outputs["teacher"]["img_emb"] @ outputs["teacher"]["txt_emb"].T)
      want = 0.5 * (optax.softmax_cross_entropy(logits, jax.nn.softmax(sims, 1)).mean()
                    + optax.softmax_cross_entropy(logits.T, jax.nn.softmax(sims.T, 1)).mean())
    else:
      want = optax.softmax_cross_entropy(
          outputs["mlm_logits"], jax.nn.softmax(outputs["teacher"]["mlm_logits"], -1)).mean()
    np.testing.assert_allclose(soft, float(want), rtol=1e-5, err_msg=name)
  with pytest.raises(ValueError, match="teacher"):
    registry.OBJECTIVES.get("itc")(distill_alpha=0.4)({k: v for k, v in outputs.items()
                                                       if k != "teacher"}, {})


@pytest.mark.parametrize("family", STEP_FAMILIES)
def test_fusion_step_equal_on_1_and_8_devices(shapes_data_dir, family):
  """Every pass of the family (ITC, hard-negative ITM over the global batch, MLM, MRM, VQA,
  grounding) in one step: loss, gradient norm and updated params agree across meshes."""
  ema = family == "albef"  # ALBEF's momentum teacher: its update is checked exactly, too
  config = _config(family, shapes_data_dir, **({"ema.decay": 0.75} if ema else {}))
  handle = trainer.sources.load_dataset(config.data)
  build.fit_vocab(config, handle)
  batch = _batch(config, handle)
  tx = optax.sgd(1.0)
  model = build.build_model(config)
  rules = mesh_lib.rules_from_config(config.sharding)
  state, _ = trainer.create_state(config, model, tx, mesh_of(1, 1, 1, 1), rules)
  state = jax.device_get(state)
  if ema:  # start the teacher away from the student, so the update has two different inputs
    state = state.replace(extras={"ema": jax.tree.map(lambda p: p + 0.01, state.params)})
  p1, m1 = one_train_step(config, model, state, mesh_of(1, 1, 1, 1), tx, batch)
  # data x fsdp x tensor = 2 x 2 x 2, at the tolerances the dual encoders and CoCa meet.
  new8, m8 = one_train_step(config, model, state, mesh_of(2, 2, 2, 8), tx, batch,
                            full_state=True)
  p8 = new8.params
  for key in ("train/loss", "train/itm/loss", "train/vqa/loss", "train/refer/loss",
              "train/mlm/loss"):
    np.testing.assert_allclose(m8[key], m1[key], rtol=1e-5, err_msg=key)
  np.testing.assert_allclose(m8["train/grad_norm"], m1["train/grad_norm"], rtol=1e-4)
  # The dual encoders' atol, relative to each leaf's scale: their leaves are O(1), while after
  # sgd(1) ViLBERT's visual_proj bias holds entries of 1e5, where a different summation order
  # moves one cancelling entry (88.4) by 3e-7 of the leaf's scale. Leaves within [-1, 1]
  # are compared exactly as the dual encoders' are.
  scaled = lambda tree: jax.tree.map(  # noqa: E731
      lambda x, ref: np.asarray(x) / max(1.0, float(np.abs(ref).max())), tree, p1)
  assert_trees_close(scaled(p1), scaled(p8), atol=2e-5, rtol=1e-4, what=family)
  moved = max(float(np.abs(a - b).max()) for a, b in
              zip(jax.tree.leaves(state.params), jax.tree.leaves(p1)))
  assert moved > 1e-3
  if ema:
    # The teacher the step distils from is momentum_passes run with the EMA parameters under
    # the step's rng: recomputed outside the step, student and teacher give the same loss.
    rng = jax.random.fold_in(state.rng, state.step)
    apply = lambda p, fn: model.apply({"params": p}, batch, train=True,  # noqa: E731
                                      rngs={"dropout": rng}, method=fn)
    with jax.set_mesh(mesh_of(1, 1, 1, 1)), nn.logical_axis_rules(rules):
      out = jax.jit(lambda p, e: {**apply(p, FT.training_passes),
                                  "teacher": apply(e, FT.momentum_passes)})(
          state.params, state.extras["ema"])
    loss, _ = build_objectives(config.objectives)(out, batch)
    np.testing.assert_allclose(float(loss), float(m1["train/loss"]), rtol=1e-5)
    # EMA after the sharded step: exactly decay * old + (1 - decay) * new, same tree.
    expect = jax.tree.map(lambda e, p: 0.75 * np.asarray(e) + 0.25 * np.asarray(p),
                          state.extras["ema"], p8)
    assert jax.tree.structure(new8.extras["ema"]) == jax.tree.structure(p8)
    assert_trees_close(new8.extras["ema"], expect, atol=1e-7, rtol=1e-6, what="ema")
