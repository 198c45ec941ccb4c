"""Video towers (vlx/models/video.py) at tiny sizes (width 32, 8 frames of 16 px): image
initialisation, temporal position interpolation, time sensitivity, padding masks, logical
axes and sharding."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vlx.models import video
from vlx.models.vit import ViT
from vlx.parallel import mesh as mesh_lib
from vlx_testlib import mesh_of

COMMON = dict(patch_size=8, width=32, depth=1, num_heads=2, mlp_dim=64)
TOWERS = {
    "vivit_joint": ("vivit", dict(encoder="joint")),
    "vivit_factorised": ("vivit", dict(encoder="factorised", temporal_depth=1)),
    "timesformer": ("timesformer", {}),
    "frame_mean": ("frame_mean", {}),
}
TIME_AWARE = ("vivit_joint", "vivit_factorised", "timesformer")


def tower(name, **over):
  kind, fields = TOWERS[name]
  return video.build_video_tower(kind, **{**COMMON, **fields, **over})


def clip(batch=4, frames=8, size=16, seed=0):
  return jnp.asarray(np.random.default_rng(seed).uniform(-1, 1, (batch, frames, size, size, 3)),
                     jnp.float32)


REAL = jnp.ones((4, 8), bool)


@functools.lru_cache(maxsize=None)
def built(name):
  """(model, params, jitted pooled(params, video [4, 8, 16, 16, 3], mask [4, 8])): one
  init and one compile per tower for the whole file (compiles are most of its cost)."""
  model = tower(name)
  params = nn.unbox(jax.jit(model.init)(jax.random.key(0), clip(batch=1), REAL[:1])["params"])
  return model, params, jax.jit(lambda p, v, m: model.apply({"params": p}, v, m)[0])


@functools.lru_cache(maxsize=None)
def image_vit():
  """(params, pooled output on frame 0 of clip(seed=1)) of the image ViT the towers mirror."""
  vit = ViT(**COMMON)
  frame = clip(seed=1)[:, 0]
  params = nn.unbox(jax.jit(vit.init)(jax.random.key(1), frame)["params"])
  return params, np.asarray(jax.jit(vit.apply)({"params": params}, frame)[0])


# ---- Image initialisation --------------------------------------------------------------------


@pytest.mark.parametrize("name,tubelet_init", [("vivit_joint", "central_frame"),
                                               ("vivit_joint", "inflate"),
                                               ("timesformer", "central_frame")])
def test_image_init_on_a_static_video_gives_the_image_vit_output(name, tubelet_init):
  """Zero temporal posembs, tubelet kernel from the patch kernel: each of the 4 tubelets
  per position embeds as the frame's patch, and attention over 4 equal copies of every key
  is attention over one (TimeSformer: its temporal branch starts at zero)."""
  image_params, want = image_vit()
  _, own, pooled = built(name)
  params = video.video_params_from_image(image_params, own, tubelet_init)
  assert not np.any(params["time_pos_embedding"])
  static = jnp.repeat(clip(seed=1)[:, :1], 8, axis=1)
  np.testing.assert_allclose(pooled(params, static, REAL), want, atol=1e-5)


def test_tubelet_kernel_puts_the_patch_kernel_on_the_central_frame_or_spreads_it():
  k = jnp.arange(12.).reshape(4, 3)
  central = np.asarray(video.tubelet_kernel(k, 3, "central_frame")).reshape(3, 4, 3)
  np.testing.assert_array_equal(central[1], k)
  assert not central[0].any() and not central[2].any()
  inflated = np.asarray(video.tubelet_kernel(k, 4, "inflate")).reshape(4, 4, 3)
  np.testing.assert_allclose(inflated, np.broadcast_to(k / 4, (4, 4, 3)))


def test_image_init_maps_every_tower():
  """Each tower's parameters start from one image ViT: shapes kept, names mapped."""
  image_params, _ = image_vit()
  for name in TOWERS:
    own = built(name)[1]
    mapped = video.video_params_from_image(image_params, own)
    assert jax.tree.map(np.shape, mapped) == jax.tree.map(np.shape, own), name
    taken = mapped["frame"] if name == "frame_mean" else mapped
    encoder = "spatial_encoder" if name == "vivit_factorised" else "encoder"
    np.testing.assert_array_equal(taken["pos_embedding"], image_params["pos_embedding"])
    np.testing.assert_array_equal(taken[encoder]["ln_final"]["scale"],
                                  image_params["encoder"]["ln_final"]["scale"], err_msg=name)


# ---- Temporal position embeddings ------------------------------------------------------------


def test_temporal_posemb_interpolates_linearly_to_other_frame_counts():
  """Learned for 8 frames (4 tubelet steps), run at 4 and 16 frames (2 and 8 steps)."""
  model, params, _ = built("vivit_joint")
  table = np.asarray(params["time_pos_embedding"][0])   # [4, width]

  @jax.jit
  def added(p):
    """What the tower adds at 4, 8 and 16 frames (only that is returned: XLA drops the rest)."""
    return [model.apply({"params": p}, clip(batch=1, frames=f), mutable=["intermediates"])[1]
            ["intermediates"]["time_pos"][0][0] for f in (4, 8, 16)]

  at4, at8, at16 = map(np.asarray, added(params))
  np.testing.assert_array_equal(at8, table)
  # 2 steps: each covers two of the 4, so it gets their mean.
  np.testing.assert_allclose(at4, (table[0::2] + table[1::2]) / 2, atol=1e-7)
  # 8 steps: centres (j + 0.5) / 2 - 0.5 on the 4-step axis, ends held.
  centres = np.clip((np.arange(8) + 0.5) / 2 - 0.5, 0, 3)
  want = np.stack([np.interp(centres, np.arange(4), table[:, c]) for c in range(32)], axis=1)
  np.testing.assert_allclose(at16, want, atol=1e-7)


def test_temporal_posemb_can_start_as_a_sinusoid_and_a_typo_is_named():
  """`time_posemb_init="sincos"`: the learned table starts as the 1-D sinusoid (unit
  amplitude, so order is visible from the first step); an unknown init is one error."""
  from vlx.models.video import build_video_tower, sincos_1d  # pylint: disable=g-import-not-at-top
  fields = dict(encoder="joint", patch_size=8, tubelet=2, num_frames=8, width=16, depth=1,
                num_heads=2)
  video = clip(batch=1, frames=8)
  tower = build_video_tower("vivit", **fields, time_posemb_init="sincos")
  shapes = jax.eval_shape(lambda: tower.init(jax.random.key(0), video))
  assert shapes["params"]["time_pos_embedding"].value.shape == (1, 4, 16)
  table = jax.jit(lambda: tower.init(jax.random.key(0), video))()["params"]["time_pos_embedding"]
  np.testing.assert_array_equal(np.asarray(table.value), sincos_1d(4, 16))
  with pytest.raises(ValueError, match="unknown time_posemb_init 'sin'"):
    build_video_tower("vivit", **fields, time_posemb_init="sin").init(jax.random.key(0), video)


# ---- Time: order and padding -----------------------------------------------------------------


@pytest.mark.parametrize("name", list(TOWERS))
def test_only_the_frame_mean_model_is_blind_to_frame_order(name):
  _, params, pooled = built(name)
  x = clip()
  mask = jnp.asarray([[True] * 8, [True] * 6 + [False] * 2] * 2)
  order = np.array([3, 0, 6, 1, 7, 2, 5, 4])
  a = pooled(params, x, mask)
  b = pooled(params, x[:, order], mask[:, order])
  if name in TIME_AWARE:
    assert np.abs(a - b).max() > 1e-3, name
  else:
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", list(TOWERS))
def test_padded_frames_do_not_change_the_pooled_embedding(name):
  """5 real frames then 3 of padding (tubelet 2: step 2 is half padding, step 3 all).
  Run a: one padding; run b: other padding pixels and, where the tower has one, another
  temporal position embedding at step 3, so a padded token differs even after the tower
  zeroes padded pixels: only masked attention and pooling keep it out."""
  _, params, pooled = built(name)
  real = clip(seed=2)
  pad_a = real.at[:, 5:].set(clip(seed=3)[:, 5:])
  pad_b = real.at[:, 5:].set(0.)
  params_b = dict(params)
  if "time_pos_embedding" in params:
    # Not a constant: the next LayerNorm would remove a shift of every feature by one value.
    params_b["time_pos_embedding"] = params["time_pos_embedding"].at[:, 3].add(
        jax.random.normal(jax.random.key(5), (COMMON["width"],)))
  mask = jnp.asarray([[True] * 5 + [False] * 3] * 4)
  want = pooled(params, pad_a, mask)
  np.testing.assert_allclose(pooled(params_b, pad_b, mask), want, atol=1e-6)
  # Even NaN padding (a decoder's garbage) stays out.
  np.testing.assert_allclose(pooled(params, real.at[:, 5:].set(jnp.nan), mask), want, atol=1e-6)
  # Unmasked, the padding shows: the comparison above is not vacuous.
  assert np.abs(pooled(params, pad_a, REAL) - pooled(params_b, pad_b, REAL)).max() > 1e-3


def test_token_mask_marks_the_tokens_of_real_frames():
  """5 real frames of 8, tubelet 2: steps 0-2 real (step 2 half), 3 tokens per step."""
  got = video.token_mask(jnp.asarray([[True] * 5 + [False] * 3]), 2, 12)
  np.testing.assert_array_equal(got, [[True] * 9 + [False] * 3])


def test_timesformer_scan_and_remat_compute_the_unrolled_stack():
  """Two different layers, unrolled vs stacked under nn.scan with remat, padding masked."""
  _, params, _ = built("timesformer")
  first = params["encoder"]["layer_0"]
  second = jax.tree.map(lambda a: a * 0.9 + 0.01, first)
  unrolled = {**params, "encoder": {**params["encoder"], "layer_1": second}}
  stacked = {**params, "encoder": {"ln_final": params["encoder"]["ln_final"],
                                   "layers": jax.tree.map(lambda a, b: jnp.stack([a, b]),
                                                          first, second)}}
  x, mask = clip(seed=6), jnp.asarray([[True] * 8, [True] * 3 + [False] * 5] * 2)
  run = lambda model, p: np.asarray(jax.jit(model.apply)({"params": p}, x, mask)[0])  # noqa: E731
  np.testing.assert_allclose(run(tower("timesformer", depth=2, scan=True, remat="full"), stacked),
                             run(tower("timesformer", depth=2), unrolled), atol=1e-5)


# ---- Logical axes and sharding ---------------------------------------------------------------

VARIANTS = {**{n: {} for n in TOWERS},
            "vivit_joint_cls_scan": ("vivit_joint", dict(pool="cls", scan=True, remat="full")),
            "vivit_factorised_cls_map": ("vivit_factorised", dict(frame_pool="cls", pool="map",
                                                                   pre_norm=True)),
            "timesformer_map_scan": ("timesformer", dict(pool="map", scan=True, remat="dots"))}


def variant(key):
  spec = VARIANTS[key]
  return tower(key) if not spec else tower(spec[0], **spec[1])


@pytest.mark.parametrize("key", list(VARIANTS))
def test_every_parameter_names_its_logical_axes(key):
  rules = mesh_lib.DEFAULT_RULES
  known = {name for name, _ in rules}
  with nn.logical_axis_rules(rules):
    boxed = jax.eval_shape(lambda r: variant(key).init(r, clip(batch=1))["params"],
                           jax.random.key(0))
  leaves = jax.tree_util.tree_flatten_with_path(
      boxed, is_leaf=lambda x: isinstance(x, nn.meta.AxisMetadata))[0]
  assert leaves
  for path, leaf in leaves:
    where = jax.tree_util.keystr(path)
    assert isinstance(leaf, nn.LogicallyPartitioned), where
    assert len(leaf.names) == leaf.value.ndim, (where, leaf.names, leaf.value.shape)
    assert any(n is not None for n in leaf.names), where
    assert set(leaf.names) - {None} <= known, (where, leaf.names)


@pytest.mark.parametrize("name", list(TOWERS))
def test_sharded_tower_equals_single_device(name):
  """jit on a data=2 x fsdp=2 x tensor=2 mesh with the default rules, frame mask on."""
  model, params, pooled = built(name)
  x = clip(seed=4)
  mask = jnp.asarray([[True] * 8, [True] * 5 + [False] * 3] * 2)
  want = np.asarray(pooled(params, x, mask))
  mesh, rules = mesh_of(2, 2, 2, 8), mesh_lib.rules_from_config({})
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    boxed = jax.eval_shape(lambda r: model.init(r, x, mask)["params"], jax.random.key(0))
    shardings = mesh_lib.logical_to_shardings(boxed, mesh, rules)
    got = jax.jit(lambda p, v, m: model.apply({"params": p}, v, m)[0])(
        jax.device_put(params, shardings), jax.device_put(x, mesh_lib.batch_sharding(mesh, 5)),
        jax.device_put(mask, mesh_lib.batch_sharding(mesh, 2)))
    assert len(got.sharding.device_set) == 8
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)
