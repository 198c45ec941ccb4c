"""VideoMAE (vlx/families/video/mae.py): tube masking, pixel targets, the masked loss, and
training through the one train step (a single device and a 2x2x2 mesh)."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from vlx import registry
from vlx.data import video_render
from vlx.families.video import mae
from vlx.models.video import TubeletStem, ViViT
from vlx.train.step import TrainState, make_train_step
from vlx.train.task import build_task
from vlx.parallel import mesh as mesh_lib
from vlx_testlib import mesh_of

ENCODER = dict(patch_size=8, tubelet=2, num_frames=8, width=32, depth=1, num_heads=2)
DECODER = dict(decoder_width=32, decoder_depth=1, decoder_heads=2)


def config(mask_ratio=0.75, norm_targets=True):
  return ml_collections.ConfigDict(dict(
      model=dict(name="video_mae", encoder=ENCODER, mask_ratio=mask_ratio,
                 norm_targets=norm_targets, **DECODER),
      task="video_mae", objectives={"mae_pixels": 1.0}, total_steps=30, sharding={}))


def model_of(c):
  return registry.MODELS.get("video_mae")(**{k: v for k, v in c.model.items() if k != "name"})


@functools.lru_cache(maxsize=None)
def videos(batch=4, seed=0):
  """`batch` synthetic videos [B, 8, 32, 32, 3] in [-1, 1] (video_render: shapes on noise)."""
  frames = np.stack([v.frames for v, _ in video_render.videos(batch, seed, 32, 8)])
  return frames.astype(np.float32) / 127.5 - 1.0


@functools.lru_cache(maxsize=None)
def built():
  """(config, model, params, outputs at init) of the model with normalised targets; the
  other tests use the same params without normalisation (one compile fewer)."""
  c = config(norm_targets=True)
  model = model_of(c)
  init = jax.jit(lambda r: model.init_with_output(r, {"video": videos()}, train=False))
  out, variables = init(jax.random.key(0))
  return c, model, nn.meta.unbox(variables["params"]), out


@functools.lru_cache(maxsize=None)
def task_outputs():
  """The task's forward on raw pixel targets, jitted: (rng, video) -> outputs (the mask
  drawn from rng)."""
  params = built()[2]
  c = config(norm_targets=False)
  task = build_task(c, model_of(c))
  return jax.jit(lambda rng, video: task.outputs(params, {}, {"video": video}, rng))


def outputs(seed=0, video=None):
  out = task_outputs()(jax.random.key(seed), videos() if video is None else video)
  return {k: np.asarray(v) for k, v in out.items()}


# ---- Tube masking ---------------------------------------------------------------------------


@pytest.mark.parametrize("num_spatial, ratio, hidden", [(16, 0.75, 12), (16, 0.9, 14),
                                                       (196, 0.9, 176), (196, 0.95, 186)])
def test_tube_mask_hides_exactly_round_ratio_positions(num_spatial, ratio, hidden):
  visible = mae.tube_mask(jax.random.key(1), 64, num_spatial, ratio)
  assert visible.shape == (64, num_spatial - hidden)
  mask = np.asarray(mae.hidden_positions(visible, num_spatial))
  np.testing.assert_array_equal(mask.sum(axis=1), hidden)
  # Each visible index names a distinct position (no repeats hiding a shortfall).
  assert all(len(set(row)) == num_spatial - hidden for row in np.asarray(visible))


def test_tube_mask_differs_across_videos_and_rngs_and_repeats_for_one_rng():
  a = np.asarray(mae.tube_mask(jax.random.key(1), 8, 16, 0.75))
  b = np.asarray(mae.tube_mask(jax.random.key(2), 8, 16, 0.75))
  assert len({tuple(r) for r in a}) > 4
  assert (a != b).any(axis=1).sum() > 4
  np.testing.assert_array_equal(a, np.asarray(mae.tube_mask(jax.random.key(1), 8, 16, 0.75)))


def test_mask_ratio_leaving_nothing_to_see_or_predict_is_refused():
  with pytest.raises(ValueError, match="at least one"):
    mae.num_hidden(16, 0.99)
  with pytest.raises(ValueError, match="at least one"):
    mae.num_hidden(16, 0.01)


def test_task_draws_tubes_from_the_step_rng_shared_by_every_time_step():
  masks = [outputs(seed)["mae_mask"] for seed in (3, 3, 4)]
  np.testing.assert_array_equal(masks[0], masks[1])
  assert (masks[0] != masks[2]).any()
  mask = masks[0]                                                   # [B, steps, n]
  assert (mask == mask[:, :1]).all(), "a hidden position must be hidden at every step"
  np.testing.assert_array_equal(mask[:, 0].sum(-1), 12)
  assert len({m.tobytes() for m in mask[:, 0]}) > 1, "every video gets its own tubes"


# ---- Encoder sees the visible tubes only ----------------------------------------------------


def test_hidden_pixels_change_targets_but_not_predictions():
  before = outputs(seed=5)
  hid = int(np.flatnonzero(before["mae_mask"][0, 0])[0])
  r, col = divmod(hid, 4)
  video = videos().copy()
  video[0, :, r * 8:(r + 1) * 8, col * 8:(col + 1) * 8] *= -1.0
  after = outputs(seed=5, video=video)
  np.testing.assert_allclose(after["mae_pred"], before["mae_pred"], atol=1e-6)
  assert np.abs(after["mae_target"][0, :, hid] - before["mae_target"][0, :, hid]).max() > 0.1


def test_all_visible_encoder_is_the_vivit_tower():
  """Same params, every tube visible: the tokens of ViViT(pool="none") (what fine-tuning
  loads the `video/` params into)."""
  params = built()[2]
  x = videos()
  everything = jnp.broadcast_to(jnp.arange(16), (4, 16))

  @jax.jit
  def both(p):
    return (mae.VisibleViViT(**ENCODER).apply({"params": p}, x, everything),
            ViViT(**ENCODER, pool="none").apply({"params": p}, x)[1])
  got, want = both(params["video"])
  np.testing.assert_allclose(np.asarray(got).reshape(want.shape), want, atol=1e-5)


# ---- Targets --------------------------------------------------------------------------------


def test_raw_targets_are_the_stems_tubelets():
  """`tubelets` (the targets without normalisation) are the pixels the stem embeds,
  flattened as the stem flattens them."""
  x = videos()
  target = np.asarray(mae.tubelets(jnp.asarray(x), 2, 8))
  assert target.shape == (4, 4, 16, 2 * 8 * 8 * 3)
  np.testing.assert_array_equal(target[1, 2, 6], x[1, 4:6, 8:16, 16:24].reshape(-1))
  stem = TubeletStem(ENCODER["width"], 8, 2)
  params = nn.meta.unbox(stem.init(jax.random.key(0), x)["params"])
  embedded, _ = stem.apply({"params": params}, x)
  kernel = params["embedding"]
  np.testing.assert_allclose(target @ kernel["kernel"] + kernel["bias"], embedded, atol=1e-4)


def test_normalised_targets_have_zero_mean_unit_std_per_tubelet_and_channel():
  target = np.asarray(built()[3]["mae_target"])                    # [B, steps, n, 2*8*8*3]
  np.testing.assert_allclose(target, mae.normalise_tubelets(outputs()["mae_target"]),
                             atol=1e-5)
  np.testing.assert_allclose(target.mean(-1), 0, atol=1e-4)
  # std is sqrt(var / (var + 1e-6)): the epsilon that keeps a flat tubelet finite
  # (its target is zero) shows on the darkest channels.
  np.testing.assert_allclose(target.std(-1), 1, atol=5e-3)
  per_channel = target.reshape(target.shape[:-1] + (-1, 3))
  np.testing.assert_allclose(per_channel.mean(-2), 0, atol=1e-4)
  np.testing.assert_allclose(per_channel.std(-2), 1, atol=5e-3)
  np.testing.assert_array_equal(mae.normalise_tubelets(jnp.full((2, 12), 0.3)), 0.0)


# ---- Objective ------------------------------------------------------------------------------


def test_loss_reads_hidden_tubelets_only():
  loss_fn = registry.OBJECTIVES.get("mae_pixels")()
  out = outputs()
  loss, metrics = loss_fn(out, {})
  mask = out["mae_mask"]
  np.testing.assert_allclose(metrics["hidden_fraction"], 0.75)
  want = ((out["mae_pred"] - out["mae_target"]) ** 2).mean(-1)[mask].mean()
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  at_visible = {**out, "mae_pred": np.where(~mask[..., None], 1e3, out["mae_pred"])}
  np.testing.assert_allclose(loss_fn(at_visible, {})[0], loss, rtol=1e-6)
  b, t, n = np.argwhere(mask)[0]
  at_hidden = {**out, "mae_pred": out["mae_pred"].copy()}
  at_hidden["mae_pred"][b, t, n] += 1.0
  assert float(loss_fn(at_hidden, {})[0]) > float(loss) + 1e-4


# ---- Training through the one step ----------------------------------------------------------


LR = 3e-3


def first_state(tx, lr):
  params = built()[2]
  opt_state = tx.init(params)
  opt_state.hyperparams["learning_rate"] = jnp.asarray(lr)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state,
                    rng=jax.random.key(0), nonfinite=jnp.zeros((), jnp.int32), extras={})


def test_thirty_adam_steps_on_a_2x2x2_mesh_lower_the_loss_and_lr_zero_does_not():
  """make_train_step jitted as the trainer jits it, sharded data=2 x fsdp=2 x tensor=2 with
  the default rules. Raw pixel targets: the learnable part of the noisy synthetic videos
  (background, shapes) is then most of the loss, where normalised targets are mostly the
  background noise. One compile serves both runs (the lr is an optimizer state leaf)."""
  c = config(norm_targets=False)
  model = model_of(c)
  task = build_task(c, model)
  tx = optax.inject_hyperparams(optax.adam)(learning_rate=LR)
  mesh, rules = mesh_of(2, 2, 2, 8), mesh_lib.rules_from_config(c.sharding)
  batch = {"video": videos()}
  state = first_state(tx, LR)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    abstract = jax.eval_shape(lambda r: model.init(r, batch, train=False)["params"],
                              jax.random.key(0))
    param_sh = mesh_lib.logical_to_shardings(abstract, mesh, rules)
    rep = mesh_lib.replicated(mesh)
    shardings = state.replace(
        step=rep, rng=rep, nonfinite=rep, extras={}, params=param_sh,
        opt_state=mesh_lib.like_param_shardings(state.opt_state, state.params, param_sh, mesh))
    step = jax.jit(make_train_step(task, tx, optax.constant_schedule(LR)),
                   in_shardings=(shardings, {"video": mesh_lib.batch_sharding(mesh, 5)}),
                   out_shardings=(shardings, rep))
    sharded_batch = mesh_lib.global_batch(batch, mesh)

    def run(lr, steps):
      state, losses = jax.device_put(first_state(tx, lr), shardings), []
      for _ in range(steps):
        state, metrics = step(state, sharded_batch)
        losses.append(float(metrics["train/mae_pixels/loss"]))
      assert int(state.nonfinite) == 0
      return state, np.asarray(losses)

    state, trained = run(LR, 30)
    _, frozen = run(0.0, 5)   # each step costs ~0.2 s of CPU on 8 emulated devices
  specs = {tuple(x.sharding.spec) for x in jax.tree.leaves(state.params)}
  assert any(a is not None for spec in specs for a in spec), "params were not sharded"
  # Step 0 on the mesh scores what the unsharded task scores with the step's rng.
  out = task_outputs()(jax.random.fold_in(jax.random.key(0), 0), videos())
  np.testing.assert_allclose(trained[0], task.loss(out, batch)[0], rtol=1e-5)
  np.testing.assert_allclose(frozen[0], trained[0], rtol=1e-6)
  assert trained[-5:].mean() < 0.5 * trained[:5].mean(), trained
  assert np.abs(frozen / frozen[0] - 1).max() < 0.1, frozen


def test_every_parameter_names_its_logical_axes():
  model = built()[1]
  boxed = jax.eval_shape(lambda r: model.init(r, {"video": videos()[:1]}, train=False)["params"],
                         jax.random.key(0))
  leaves = jax.tree_util.tree_flatten_with_path(
      boxed, is_leaf=lambda x: isinstance(x, nn.meta.AxisMetadata))[0]
  known = {name for name, _ in mesh_lib.DEFAULT_RULES}
  for path, leaf in leaves:
    where = jax.tree_util.keystr(path)
    assert isinstance(leaf, nn.LogicallyPartitioned), where
    assert len(leaf.names) == leaf.value.ndim and set(leaf.names) - {None} <= known, where
    assert any(n is not None for n in leaf.names), where


def test_init_map_starts_a_video_text_tower_from_the_mae_encoder(tmp_path):
  """`init_from` + `init_map="video_tower=video"`: the VideoMAE encoder's params (saved the
  way the trainer saves a state) become the video-text model's tower, the text side keeps its
  fresh init; a map naming a subtree the model lacks is one clear error."""
  from vlx import config_checks  # pylint: disable=g-import-not-at-top
  from vlx.train import checkpoint  # pylint: disable=g-import-not-at-top
  mae_params = built()[2]
  ckpt = checkpoint.Checkpointer(str(tmp_path / "checkpoints"), async_save=False)
  ckpt.save(7, {"params": mae_params, "step": np.int32(7)}, {})
  ckpt.close()
  fresh = {"video_tower": jax.tree.map(jnp.zeros_like, mae_params["video"]),
           "txt": {"w": jnp.ones((2,))}}
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), fresh)
  mapping = config_checks.parse_init_map(" video_tower = video ")
  loaded = checkpoint.load_params(str(tmp_path), abstract, fresh, mapping)
  jax.tree.map(np.testing.assert_array_equal, loaded["video_tower"], mae_params["video"])
  np.testing.assert_array_equal(loaded["txt"]["w"], np.ones(2))
  # A model that adds a module inside the mapped tower (an adapter) takes every param the
  # checkpoint holds and keeps its own new leaves as initialised, if config.init_fresh names
  # them; an undeclared missing leaf (another layout) is an error.
  grown = dict(fresh, video_tower=dict(fresh["video_tower"], adapter={"w": jnp.full((3,), 5.)}))
  shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), grown)
  with pytest.raises(ValueError, match=r"lacks 1 param.*video_tower/adapter/w.*init_fresh"):
    checkpoint.load_params(str(tmp_path), shapes, grown, mapping)  # not declared fresh
  loaded = checkpoint.load_params(str(tmp_path), shapes, grown, mapping,
                                  fresh_regex=r"video_tower/adapter/.*")
  np.testing.assert_array_equal(loaded["video_tower"]["adapter"]["w"], np.full(3, 5.))
  jax.tree.map(np.testing.assert_array_equal,
               {k: v for k, v in loaded["video_tower"].items() if k != "adapter"},
               mae_params["video"])
  one = next(iter(mae_params["video"]))   # a held leaf of another shape is refused by name
  bad = dict(fresh, video_tower={one: jax.tree.map(lambda x: jnp.zeros((*x.shape, 2)),
                                                   mae_params["video"][one])})
  shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), bad)
  with pytest.raises(ValueError, match=f"video/{one}.* has shape"):
    checkpoint.load_params(str(tmp_path), shapes, bad, mapping)
  with pytest.raises(ValueError, match=r"init_map names \['video'\]"):
    checkpoint.load_params(str(tmp_path), abstract, fresh, {"video": "video"})
  # A dst path puts the subtree deeper (an image model's tower inside a QA model's video
  # tower); the siblings at every level keep their init.
  nested = {"qa": {"tower": fresh["video_tower"], "head": {"w": jnp.ones((2,))}},
            "txt": fresh["txt"]}
  shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), nested)
  loaded = checkpoint.load_params(str(tmp_path), shapes, nested, {"qa/tower": "video"})
  jax.tree.map(np.testing.assert_array_equal, loaded["qa"]["tower"], mae_params["video"])
  np.testing.assert_array_equal(loaded["qa"]["head"]["w"], np.ones(2))
  with pytest.raises(ValueError, match=r"init_map names \['qa/video'\]"):
    checkpoint.load_params(str(tmp_path), shapes, nested, {"qa/video": "video"})
  with pytest.raises(ValueError, match="init_map puts qa/tower inside qa"):
    checkpoint.load_params(str(tmp_path), shapes, nested, {"qa": "txt", "qa/tower": "video"})
  with pytest.raises(config_checks.ConfigError, match="expected dst=src"):
    config_checks.parse_init_map("video_tower")
