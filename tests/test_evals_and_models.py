"""Evaluator maths on hand-made inputs, and model invariants (pooling, scan/remat, dtypes,
logical axis names on every parameter)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from vlx import config_lib
from vlx.evals import linear_probe, retrieval
from vlx.models import text as text_lib
from vlx.models.vit import ViT
from vlx.parallel import mesh as mesh_lib
from vlx import build
from vlx.train import trainer
from vlx_testlib import REPO, shapes_data_dir, shapes_handle  # noqa: F401

# ---- retrieval ----------------------------------------------------------------------------

# sims[i, c]: image i vs caption c; captions 0,1 belong to image 0, 2,3 to 1, 4,5 to 2.
SIMS = np.array([
    [0.5, 0.9, 0.1, 0.2, 0.3, 0.0],    # image 0: own caption first          -> i2t rank 0
    [0.9, 0.0, 0.4, 0.7, 0.8, 0.1],    # image 1: two others before its own  -> i2t rank 2
    [0.2, 0.3, 0.6, 0.5, 0.1, 0.05],   # image 2: four others before its own -> i2t rank 4
])
# t2i ranks per caption (rank of the owner in its column): [1, 0, 1, 0, 2, 1].


def _embeddings_with_sims(sims, k):
  """img = identity rows, so img @ txt.T reproduces `sims` exactly."""
  n = sims.shape[0]
  img = np.eye(n, dtype=np.float64)
  txt = sims.T.reshape(n, k, n)
  return img, txt


def test_recall_at_k_known_ranks():
  img, txt = _embeddings_with_sims(SIMS, 2)
  np.testing.assert_allclose(img @ txt.reshape(6, 3).T, SIMS)
  r = retrieval.recall_at_k(img, txt, ks=(1, 2, 3, 5))
  assert r["i2t_r1"] == pytest.approx(1 / 3)
  assert r["i2t_r2"] == pytest.approx(1 / 3)
  assert r["i2t_r3"] == pytest.approx(2 / 3)
  assert r["i2t_r5"] == pytest.approx(1.0)
  assert r["t2i_r1"] == pytest.approx(2 / 6)
  assert r["t2i_r2"] == pytest.approx(5 / 6)
  assert r["t2i_r3"] == pytest.approx(1.0)


def test_recall_at_k_perfect_and_shuffled():
  rng = np.random.default_rng(0)
  n, k, d = 20, 3, 64
  img = rng.normal(size=(n, d))
  img /= np.linalg.norm(img, axis=-1, keepdims=True)
  txt = img[:, None, :] + 0.01 * rng.normal(size=(n, k, d))
  r = retrieval.recall_at_k(img, txt)
  assert r["i2t_r1"] == 1.0 and r["t2i_r1"] == 1.0
  # Captions attached to the wrong images: recall@1 collapses.
  r = retrieval.recall_at_k(img, np.roll(txt, 1, axis=0))
  assert r["i2t_r1"] == 0.0 and r["t2i_r1"] == 0.0


# ---- linear probe -------------------------------------------------------------------------


@pytest.mark.parametrize("shots", [2, 40])  # fewer examples than features (dual form) and more
def test_ridge_probe_separates_clusters(shots):
  rng = np.random.default_rng(shots)
  classes, d = 4, 16
  centers = 5.0 * rng.normal(size=(classes, d))

  def sample(per_class):
    y = np.repeat(np.arange(classes), per_class)
    return centers[y] + rng.normal(size=(len(y), d)), y

  x_train, y_train = sample(shots)
  x_test, y_test = sample(25)
  pred = linear_probe.ridge_predict(x_train, y_train, x_test, classes, l2=1.0)
  assert pred.shape == (len(y_test),)
  assert np.mean(pred == y_test) == 1.0
  # Shuffled training labels carry no information: far from perfect.
  pred = linear_probe.ridge_predict(x_train, rng.permutation(y_train), x_test, classes, 1.0)
  assert np.mean(pred == y_test) < 0.9


# ---- text pooling -------------------------------------------------------------------------


def test_pool_tokens_picks_the_right_positions_and_ignores_padding():
  tokens = np.array([
      [5, 6, 7, 2, 0, 0],    # EOS at 3, then padding
      [5, 6, 7, 8, 9, 2],    # no padding
      [5, 6, 7, 8, 9, 10],   # truncated: no EOS
      [5, 2, 7, 8, 0, 0],    # EOS before other real tokens
  ], np.int32)
  b, l, d = tokens.shape + (3,)
  pos = np.arange(l, dtype=np.float32)
  x = np.broadcast_to(pos[None, :, None] + 100 * np.arange(b)[:, None, None], (b, l, d)).copy()
  x[tokens == 0] = 1e6  # padding values must never leak into a pooled vector
  x = jnp.asarray(x)
  base = 100 * np.arange(b)

  def pool(how):
    out = np.asarray(text_lib.pool_tokens(x, jnp.asarray(tokens), how, eos_id=2))
    assert out.shape == (b, d)
    np.testing.assert_array_equal(out, out[:, :1].repeat(d, 1))
    return out[:, 0] - base

  np.testing.assert_array_equal(pool("first"), [0, 0, 0, 0])
  np.testing.assert_array_equal(pool("last"), [3, 5, 5, 3])
  np.testing.assert_array_equal(pool("eot"), [3, 5, 5, 1])
  np.testing.assert_allclose(pool("mean"), [1.5, 2.5, 2.5, 1.5])
  with pytest.raises(ValueError, match="unknown text pooling"):
    text_lib.pool_tokens(x, jnp.asarray(tokens), "max", eos_id=2)


# ---- ViT: scan / remat / dtype ------------------------------------------------------------

VIT = dict(patch_size=8, width=32, depth=2, num_heads=2, mlp_ratio=2.0)


def _image(n=2, s=32, seed=0):
  return jax.random.uniform(jax.random.key(seed), (n, s, s, 3), minval=-1, maxval=1)


def _init(module, x):
  return nn.meta.unbox(jax.jit(module.init)(jax.random.key(0), x)["params"])


def _count(params):
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))


@pytest.mark.parametrize("pool", ["gap", "map"])
def test_vit_scan_matches_unrolled(pool):
  x = _image()
  unrolled, scanned = ViT(**VIT, pool=pool, scan=False), ViT(**VIT, pool=pool, scan=True)
  p_un, p_sc = _init(unrolled, x), _init(scanned, x)
  assert _count(p_un) == _count(p_sc)
  assert "layers" in p_sc["encoder"] and "layer_0" in p_un["encoder"]
  pooled_un, tok_un = jax.jit(unrolled.apply)({"params": p_un}, x)
  pooled_sc, tok_sc = jax.jit(scanned.apply)({"params": p_sc}, x)
  assert pooled_un.shape == pooled_sc.shape == (2, 32)
  assert tok_un.shape == tok_sc.shape == (2, 16, 32)
  # The same weights, stacked along the scanned 'layers' axis, give the same function.
  stacked = dict(p_un)
  enc = dict(p_un["encoder"])
  layers = [enc.pop(f"layer_{i}") for i in range(VIT["depth"])]
  enc["layers"] = jax.tree.map(lambda *xs: jnp.stack(xs), *layers)
  stacked["encoder"] = enc
  assert jax.tree.structure(stacked) == jax.tree.structure(p_sc)
  pooled_st, _ = jax.jit(scanned.apply)({"params": stacked}, x)
  np.testing.assert_allclose(pooled_st, pooled_un, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scan", [False, True])
def test_remat_full_gives_identical_outputs_and_grads(scan):
  x = _image(seed=1)
  plain = ViT(**VIT, scan=scan, remat="none")
  remat = ViT(**VIT, scan=scan, remat="full")
  params = _init(plain, x)
  assert jax.tree.structure(_init(remat, x)) == jax.tree.structure(params)

  def loss(module, p):
    pooled, _ = module.apply({"params": p}, x)
    return jnp.sum(pooled ** 2)

  np.testing.assert_array_equal(jax.jit(plain.apply)({"params": params}, x)[0],
                                jax.jit(remat.apply)({"params": params}, x)[0])
  g_plain = jax.jit(jax.grad(lambda p: loss(plain, p)))(params)
  g_remat = jax.jit(jax.grad(lambda p: loss(remat, p)))(params)
  for a, b in zip(jax.tree.leaves(g_plain), jax.tree.leaves(g_remat)):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="unknown remat policy"):
    _init(ViT(**VIT, remat="sometimes"), x)


def _config(family="clip", **over):
  config = config_lib.load_config_file(f"{REPO}/configs/{family}.py:tiny")
  base = {"model.image.depth": 1, "model.text.depth": 1, "model.image.width": 32,
          "model.text.width": 32, "model.image.num_heads": 2, "model.text.num_heads": 2,
          "model.embed_dim": 16, "data.image_size": 32, "data.max_len": 8,
          "model.text.max_len": 8}
  base.update(over)
  config_lib.apply_overrides(config, [(k, str(v)) for k, v in base.items()])
  return config


def _batch(config, n=4):
  rng = np.random.default_rng(0)
  text = np.zeros((n, config.data.max_len), np.int32)
  text[:, :4] = rng.integers(3, 200, (n, 4))
  text[:, 4] = 2
  s = config.data.image_size
  return {"image": rng.uniform(-1, 1, (n, s, s, 3)).astype(np.float32), "text": text}


def test_bf16_compute_runs_and_params_stay_float32():
  config32, config16 = _config(), _config(**{"model.dtype": "bfloat16"})
  batch = _batch(config32)
  model32, model16 = build.build_model(config32), build.build_model(config16)
  params = nn.meta.unbox(jax.jit(lambda r: model16.init(r, batch, train=False))(
      jax.random.key(0))["params"])
  dtypes = {jnp.dtype(p.dtype) for p in jax.tree.leaves(params)}
  assert dtypes == {jnp.dtype(jnp.float32)}, dtypes
  out16 = jax.jit(model16.apply)({"params": params}, batch)
  out32 = jax.jit(model32.apply)({"params": params}, batch)
  for key in ("img_emb", "txt_emb"):
    assert out16[key].dtype == jnp.float32  # embeddings normalized in float32
    assert np.isfinite(np.asarray(out16[key])).all()
    # bf16 really computes differently, yet close to the float32 result.
    assert not np.array_equal(np.asarray(out16[key]), np.asarray(out32[key]))
    cos = np.sum(np.asarray(out16[key]) * np.asarray(out32[key]), -1)
    assert np.all(cos > 0.98), cos
  pooled, _ = jax.jit(lambda p, x: model16.apply({"params": p}, x,
                                                 method=lambda m, x: m.img_tower(x)))(
                                                     params, batch["image"])
  assert pooled.dtype == jnp.bfloat16
  grads = jax.jit(jax.grad(lambda p: jnp.sum(model16.apply({"params": p}, batch)["img_emb"])))(params)
  assert {jnp.dtype(g.dtype) for g in jax.tree.leaves(grads)} == {jnp.dtype(jnp.float32)}


@pytest.mark.parametrize("family,scan", [("clip", False), ("siglip", False), ("siglip", True)])
def test_every_param_has_logical_axis_names(family, scan):
  config = _config(family, **{"model.image.scan": scan, "model.text.scan": scan})
  model = build.build_model(config)
  batch = {k: v[:1] for k, v in _batch(config).items()}
  boxed = jax.eval_shape(lambda r: model.init(r, batch, train=False)["params"],
                         jax.random.key(0))
  is_box = lambda x: isinstance(x, nn.meta.AxisMetadata)  # noqa: E731
  leaves = jax.tree_util.tree_leaves_with_path(boxed, is_leaf=is_box)
  assert len(leaves) > 10
  unboxed = [jax.tree_util.keystr(p) for p, x in leaves if not isinstance(x, nn.LogicallyPartitioned)]
  assert not unboxed, f"parameters without logical axis names: {unboxed}"

  specs = nn.get_partition_spec(boxed)
  spec_leaves = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, P))
  shapes = jax.tree.leaves(mesh_lib.unbox(boxed))
  assert len(spec_leaves) == len(shapes)
  known = {name for name, _ in mesh_lib.DEFAULT_RULES}
  for (path, _), spec, shape in zip(leaves, spec_leaves, shapes):
    name = jax.tree_util.keystr(path)
    assert isinstance(spec, P), (name, spec)
    assert len(spec) == len(shape.shape), (name, spec, shape.shape)
    assert all(a is None or a in known for a in spec), (name, spec)
  if scan:
    assert any("layers" in tuple(s) for s in spec_leaves)
  # ...and the trainer can turn them into shardings on a real 3-axis mesh.
  import ml_collections  # pylint: disable=g-import-not-at-top
  mesh = mesh_lib.make_mesh(ml_collections.ConfigDict(dict(data=2, fsdp=2, tensor=2)))
  shardings = mesh_lib.logical_to_shardings(boxed, mesh, mesh_lib.DEFAULT_RULES)
  assert len(jax.tree.leaves(shardings)) == len(shapes)


# ---- evaluators on a split from the config, streamed in batches ----------------------------


class _TinyTowers(nn.Module):
  """A two-tower stand-in with real parameters: the evaluators' data path, not the model, is
  under test (compiles in a second)."""

  def setup(self):
    self.img = nn.Dense(16)
    self.txt = nn.Embed(256, 16)

  def __call__(self, image, text):
    return self.encode_image(image), self.encode_text(text)

  def encode_image(self, image):
    x = image.reshape(image.shape[0], 4, image.shape[1] // 4, 4, image.shape[2] // 4, 3)
    x = self.img(x.mean((2, 4)).reshape(image.shape[0], -1))
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)

  def encode_text(self, text):
    x = self.txt(text).sum(1)
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


_COLOURS = ("red", "green", "blue", "white")
_SHAPES = ("circle", "square")


def _eval_record(i):
  rng = np.random.default_rng(i)
  label = i % 8
  colour, shape = _COLOURS[label // 2], _SHAPES[label % 2]
  return {"image": rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), "label": label,
          "captions": np.array([f"a {colour} {shape} number {i}", f"one {colour} {shape}"],
                               dtype=object)}


@pytest.fixture(scope="module")
def eval_setup(shapes_handle):
  """A dataset with train and val splits only (coco_captions' names), the tiny model, params."""
  from vlx.data import sources  # pylint: disable=g-import-not-at-top
  handle = sources.DatasetHandle(
      splits={"train": [_eval_record(i) for i in range(48)],
              "val": [_eval_record(1000 + i) for i in range(40)]},
      tokenizer=shapes_handle.tokenizer,
      class_names=[f"{c} {s}" for c in _COLOURS for s in _SHAPES])
  model = _TinyTowers()
  params = model.init(jax.random.key(0), np.zeros((1, 16, 16, 3), np.float32),
                      np.zeros((1, 16), np.int32))["params"]
  mesh = mesh_lib.make_mesh(ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1)))
  return handle, model, params, mesh


def _eval_config(pp_eval="decode|value_range(-1,1)", batch=16, **evals):
  return ml_collections.ConfigDict(dict(
      eval_batch_size=batch,
      data=dict(train_split="train", test_split="val", pp_eval=pp_eval, max_len=16),
      evals=evals or dict(retrieval=dict(type="retrieval"),
                          zeroshot=dict(type="zeroshot", attributes=dict(colour=0, shape=1)),
                          linear_probe=dict(type="linear_probe", shots=(1, 2), pool=32))))


def test_evaluators_read_the_configured_splits(eval_setup):
  """coco_captions has no 'test' split: every evaluator takes `data.test_split` (and the probe
  `data.train_split`) unless told otherwise."""
  from vlx.evals import captioning  # pylint: disable=g-import-not-at-top
  from vlx.families.fusion import evals as fusion  # pylint: disable=g-import-not-at-top
  from vlx.evals.common import EvalContext  # pylint: disable=g-import-not-at-top
  handle, model, params, mesh = eval_setup
  config = _eval_config()
  evals = trainer.build_evaluators(config, model, mesh, handle)
  metrics = {name: ev(params) for name, ev in evals.items()}
  assert metrics["retrieval"]["num_images"] == 40
  assert set(metrics["zeroshot"]) >= {"top1", "top5", "colour_acc", "shape_acc"}
  assert set(metrics["linear_probe"]) == {"1shot", "2shot"}
  ctx = EvalContext(model=model, mesh=mesh, handle=handle, data_config=config.data)
  for cls in (captioning.Captioning, fusion.VQA, fusion.Grounding, fusion.ITMRetrieval):
    assert cls(ctx).reader.split == "val", cls
  # An explicit split still wins, and an unknown one fails when the evaluator is built.
  assert retrieval.Retrieval(ctx, split="train").reader.split == "train"
  with pytest.raises(KeyError, match="unknown split 'test'"):
    retrieval.Retrieval(ctx, split="test")


_ALIVE = {"now": 0, "peak": 0}


def _count_alive(handle):
  """pp op (tests only): counts the preprocessed images alive at once."""
  del handle
  import weakref  # pylint: disable=g-import-not-at-top

  def dead():
    _ALIVE["now"] -= 1

  def fn(ex, rng):
    del rng
    _ALIVE["now"] += 1
    _ALIVE["peak"] = max(_ALIVE["peak"], _ALIVE["now"])
    weakref.finalize(ex["image"], dead)
    return ex
  return fn


@pytest.mark.parametrize("num_val", [40, 120])
def test_evaluators_hold_one_batch_of_images_at_a_time(eval_setup, num_val):
  """The host never holds the split's images: at most one batch of decoded images is alive,
  however long the split."""
  from vlx import registry  # pylint: disable=g-import-not-at-top
  if "count_alive" not in registry.PP_OPS:
    registry.PP_OPS.register("count_alive")(_count_alive)
  handle, model, params, mesh = eval_setup
  handle = type(handle)(**{**handle.__dict__, "splits": {
      "train": handle.splits["train"], "val": [_eval_record(2000 + i) for i in range(num_val)]}})
  batch = 16
  config = _eval_config("decode|value_range(-1,1)|count_alive", batch)
  for name in list(config.evals):
    one = ml_collections.ConfigDict(config.to_dict())
    one.evals = {name: config.evals[name].to_dict()}
    _ALIVE.update(now=0, peak=0)
    trainer.build_evaluators(one, model, mesh, handle)[name](params)  # building and running
    assert 0 < _ALIVE["peak"] <= batch, (name, _ALIVE)


def test_streamed_evaluators_give_the_numbers_of_the_whole_split_at_once(eval_setup):
  """Streaming changes no number: the same metrics as embedding the stacked split in one call
  (what the evaluators did before they streamed), with a batch that leaves a remainder."""
  from vlx.data import pipeline  # pylint: disable=g-import-not-at-top
  from vlx.evals import zeroshot  # pylint: disable=g-import-not-at-top
  from vlx.evals.common import EvalContext, embed  # pylint: disable=g-import-not-at-top
  handle, model, params, mesh = eval_setup
  config = _eval_config(batch=16)
  got = {n: ev(params) for n, ev in trainer.build_evaluators(config, model, mesh, handle).items()}
  ctx = EvalContext(model=model, mesh=mesh, handle=handle, data_config=config.data,
                    batch_size=16)
  pp = config.data.pp_eval
  val = pipeline.load_eval_arrays(handle, "val", pp, 16)
  img = embed(ctx, params, "encode_image", val["image"])
  n, k, l = val["text"].shape
  txt = embed(ctx, params, "encode_text", val["text"].reshape(n * k, l)).reshape(n, k, -1)
  assert got["retrieval"] == {**retrieval.recall_at_k(img, txt), "num_images": n,
                              "duplicate_caption_frac": retrieval.duplicate_fraction(
                                  val["caption_strings"])}
  cls = zeroshot.class_embeddings(ctx, params, handle.class_names, zeroshot.DEFAULT_TEMPLATES, 16)
  scores = img @ cls.T
  assert got["zeroshot"]["top1"] == float(np.mean(scores.argmax(-1) == val["label"]))
  # The probe, as it read the whole pool before streaming.
  train = pipeline.load_eval_arrays(handle, "train", pp, 16, 32)
  rng = np.random.default_rng(0)
  for shots in (1, 2):
    idx = sorted(j for c in range(8) for j in rng.permutation(
        np.flatnonzero(train["label"] == c))[:shots].tolist())
    index = np.array(idx)
    if shots == 1:
      first = index
  needed = np.unique(np.concatenate([first, index]))
  feats = embed(ctx, params, "encode_image", train["image"][needed])
  pos = {int(j): i for i, j in enumerate(needed)}
  for shots, index in ((1, first), (2, index)):
    rows = [pos[int(j)] for j in index]
    pred = linear_probe.ridge_predict(feats[rows], train["label"][needed][rows], img, 8, 1.0)
    assert got["linear_probe"][f"{shots}shot"] == float(np.mean(pred == val["label"]))
