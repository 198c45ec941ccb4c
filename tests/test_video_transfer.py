"""Image->video transfer (vlx/families/video_transfer, configs/video_transfer.py): every
paradigm starts as the image model on a static video, mean pooling cannot read frame order
while the temporal ones can, padded frames never reach real ones, the frozen paradigm leaves
the image tower bit for bit, the sharded step equals one device, and an image model's
checkpoint starts a paradigm through vlx.main (its adapters keep their init)."""

import json
import re

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest

from vlx import build, config_lib
from vlx_testlib import (REPO, assert_trees_close, mesh_of, one_train_step,  # noqa: F401
                         read_metrics, shapes_data_dir, video_data_dir)

CONFIG = str(REPO / "configs" / "video_transfer.py")
# text_prompt's video side is seq_transformer's (its prompts are in the text tower:
# tests/test_prompt_tuning.py).
PARADIGMS = ("mean_pool", "seq_transformer", "evl", "cross_encoder", "st_adapter", "aim",
             "full_finetune", "xclip", "vpt", "st_adapter,seq_transformer", "evl,seq_transformer")
ORDER_BLIND = ("mean_pool", "full_finetune")
# What the adapted paradigms add inside the image tower and train (adapters, AIM's temporal
# position tables), written out here rather than read from the config it checks.
ADAPTED = re.compile(r"img/.*(_adapter/.*|/time_pos_embedding|/message_.*)")
TEXT_PROMPTS = re.compile(r"txt/encoder/layer_\d+/prompt_(tokens|gate)")


def compare_video_module():
  """experiments/compare_video.py as a module (it is a script, not in a package)."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location("compare_video",
                                                REPO / "experiments" / "compare_video.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def small_config(paradigm: str, *overrides, base: bool = True):
  """The paradigm's smoke config with small towers (`base`: the transfer model's keys; the
  `qa` model's tower keys come in `overrides`)."""
  config = config_lib.load_config_file(f"{CONFIG}:{paradigm},smoke")
  image = [("model.image.depth", "2"), ("model.image.width", "32"),
           ("model.image.num_heads", "2"), ("model.embed_dim", "16"),
           ("model.temperature_init", str(1 / 0.07))] if base else []
  config_lib.apply_overrides(config, [
      *image, ("model.text.depth", "1"), ("model.text.width", "32"),
      ("model.text.num_heads", "2"), ("data.max_len", "8"), ("model.text.max_len", "8"),
      ("model.text.vocab_size", "64"), *overrides])
  return config


def batch_of(config, b=4, seed=0, padded=True):
  rng = np.random.default_rng(seed)
  t, s = config.data.num_frames, config.data.image_size
  text = rng.integers(3, 64, (b, 8)).astype(np.int32)
  text[:, 5] = 2  # EOS, then padding
  text[:, 6:] = 0
  batch = {"video": rng.uniform(-1, 1, (b, t, s, s, 3)).astype(np.float32), "text": text}
  if padded:
    batch["frame_mask"] = np.arange(t)[None] < rng.integers(t // 2, t + 1, b)[:, None]
  return batch


def built(paradigm):
  """(config, model, params as initialised, unboxed)."""
  config = small_config(paradigm)
  model = build.build_model(config)
  batch = {k: v[:1] for k, v in batch_of(config).items()}
  params = nn.meta.unbox(model.init(jax.random.key(0), batch, train=False)["params"])
  return config, model, params


def perturbed(params, std):
  """Every leaf moved by noise of std `std`: the zero-initialised adapter outputs then do
  something, as after training."""
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  return jax.tree.unflatten(tree, [x + std * jax.random.normal(k, x.shape, x.dtype)
                                   for x, k in zip(leaves, keys)])


def opened_gates(params):
  """The gates that start at 0 (X-CLIP's message share, VPT's prompt share) at 1, where the
  papers' models have them."""
  return jax.tree_util.tree_map_with_path(
      lambda path, x: np.ones_like(x) if str(path[-1].key).endswith("_gate") else x, params)


@pytest.mark.parametrize("paradigm", PARADIGMS)
def test_starts_as_the_image_model_reads_order_if_temporal_and_ignores_padding(paradigm):
  """At init, on a static video (8 frames, and 5: the frame count is a call-time property),
  every paradigm embeds as the image model does (to 1e-6). With trained-looking (perturbed)
  weights: mean pooling and full fine-tuning embed a clip and its frames shuffled bit for bit
  alike, the temporal paradigms do not; padded frames, whatever they hold, change no
  paradigm's embedding of the real frames."""
  config, model, params = built(paradigm)
  frame = np.random.default_rng(1).uniform(-1, 1, (3, 32, 32, 3)).astype(np.float32)
  video = np.repeat(frame[:, None], config.data.num_frames, axis=1)
  encode = jax.jit(lambda p, v, m: model.apply({"params": p}, v, m, method="encode_video"))
  want = jax.jit(lambda f: model.apply({"params": params}, f, method="encode_image"))(frame)
  np.testing.assert_allclose(encode(params, video, None), want, atol=1e-6)
  np.testing.assert_allclose(encode(params, video[:, :5], None), want, atol=1e-6)

  params = opened_gates(perturbed(params, 0.05))
  enc = lambda v, m=None: np.asarray(encode(params, v, m))  # noqa: E731
  video = batch_of(config, padded=False)["video"]
  perm = np.array([3, 0, 6, 1, 7, 2, 5, 4])
  moved = float(np.abs(enc(video) - enc(video[:, perm])).max())
  if paradigm in ORDER_BLIND:
    assert moved == 0.0
  else:
    assert moved > 1e-3, moved
  mask = np.arange(8)[None] < np.array([5, 8, 6, 3])[:, None]
  zeros = np.where(mask[:, :, None, None, None], video, 0)
  noise = np.where(mask[:, :, None, None, None], video, np.random.default_rng(2).uniform(
      -1, 1, video.shape).astype(np.float32))
  np.testing.assert_allclose(enc(zeros, mask), enc(noise, mask), atol=1e-6)


@pytest.mark.parametrize("paradigm", ["evl", "aim", "vpt", "text_prompt",  # st_adapter: main
                                      "st_adapter,seq_transformer"])
def test_locked_image_weights_stay_bit_for_bit_and_the_rest_trains(paradigm):
  """Three AdamW steps (weight decay on) with the config's parameter groups: the frozen
  paradigm's image tower and projection, and the adapted paradigm's image weights but its
  adapters, do not move by one bit; the text tower, temporal module and adapters do (their
  zero-initialised output projections move first, the weights behind them next)."""
  config, model, tx, _, state = _with_optimizer(paradigm)
  before = state.params
  state, _ = one_train_step(config, model, state, mesh_of(1, 1, 1, 1), tx,
                            [batch_of(config, seed=seed) for seed in range(3)],  # lr(0) = 0
                            full_state=True)
  flat_before = _flat(before)
  for path, after in _flat(state.params).items():
    same = np.array_equal(after, flat_before[path])
    locked = path.startswith(("img/", "img_proj/")) and not ADAPTED.fullmatch(path)
    if paradigm == "text_prompt":  # the text tower and projection too, but for the prompts
      locked |= path.startswith(("txt/", "txt_proj/")) and not TEXT_PROMPTS.fullmatch(path)
    if path.endswith("key/bias") and not locked:
      continue  # a key bias shifts every logit of a query alike: softmax gives it no gradient
    assert same == locked, (path, same)


def test_locked_groups_get_no_weight_gradient_and_the_same_update():
  """The train step computes no gradient for a frozen group's weights (vlx/train/step.py):
  ST-Adapter's step with them skipped costs fewer FLOPs than with them computed and thrown
  away, and applies the same update: the locked weights bit for bit unchanged, the adapters
  and text side moved alike."""
  from vlx.train import optimizer, step as step_lib  # pylint: disable=g-import-not-at-top
  from vlx.train.task import build_task  # pylint: disable=g-import-not-at-top
  config, model, tx, schedule, state = _with_optimizer("st_adapter",
                                                      ("optimizer.warmup_steps", "0"))
  state = state.replace(params=perturbed(state.params, 0.02))  # adapters' up off zero
  frozen = optimizer.frozen_mask(config.optimizer, state.params)
  assert sum(jax.tree.leaves(frozen)) > 10  # the image tower's weights
  batch = batch_of(config)
  runs = {}
  for skip in (True, False):
    fn = jax.jit(step_lib.make_train_step(build_task(config, model), tx, schedule,
                                          frozen=frozen if skip else None))
    flops = compiled_flops(fn, state, batch)
    new_state, metrics = jax.device_get(fn(state, batch))
    runs[skip] = (flops, _flat(new_state.params), metrics)
  (flops_skip, after, m_skip), (flops_all, reference, m_all) = runs[True], runs[False]
  assert flops_skip < 0.9 * flops_all, (flops_skip, flops_all)
  np.testing.assert_allclose(m_skip["train/loss"], m_all["train/loss"], rtol=1e-6)
  before = _flat(state.params)
  locked = {p for p, f in zip(before, jax.tree.leaves(frozen)) if f}
  moved = 0
  for path, value in after.items():
    if path in locked:
      np.testing.assert_array_equal(value, before[path], err_msg=path)
    else:
      np.testing.assert_allclose(value, reference[path], rtol=1e-5, atol=1e-6, err_msg=path)
      moved += not np.array_equal(value, before[path])
  assert moved > 10, moved  # the update is real (lr > 0 at this step)
  # The gradient norm is the trainable leaves': the locked tower's gradient is not computed.
  assert m_skip["train/grad_norm"] < m_all["train/grad_norm"]


def test_an_adapted_paradigm_stacks_the_temporal_transformer_on_its_upper_blocks():
  """`:st_adapter,seq_transformer`: ST-Adapter's tower with seqTransf's temporal transformer
  on top; tiny adapts the blocks from the second on (the first is the image model's, with no
  adapter weights), so its step costs fewer FLOPs than with adapters in every block. A stack
  that is not a stackable paradigm (adapted, or EVL) plus seq_transformer is refused."""
  from vlx.train import optimizer, step as step_lib  # pylint: disable=g-import-not-at-top
  from vlx.train.task import build_task  # pylint: disable=g-import-not-at-top
  tiny = config_lib.load_config_file(f"{CONFIG}:st_adapter,seq_transformer,where")
  assert tiny.model.temporal.kind == "seq_transformer" and not tiny.model.frozen_image
  assert tiny.model.adapter.first_layer == 1 and tiny.optimizer.lr == 1e-3
  plain = config_lib.load_config_file(f"{CONFIG}:st_adapter")
  assert plain.model.adapter.get("first_layer", 0) == 0  # the paper's: every block
  assert plain.optimizer.lr == 5e-4
  qa = config_lib.load_config_file(f"{CONFIG}:st_adapter,seq_transformer,qa")
  assert qa.model.video.temporal.kind == "seq_transformer"
  for spec in ("mean_pool,seq_transformer", "st_adapter,aim"):
    with pytest.raises(ValueError, match="names 2 paradigms"):
      config_lib.load_config_file(f"{CONFIG}:{spec}")
  with pytest.raises(ValueError, match="X-CLIP has its own temporal transformer"):
    config_lib.load_config_file(f"{CONFIG}:xclip,seq_transformer")
  # An imported CLIP keeps the paper's layout and the run's learning rate.
  assert "first_layer" not in config_lib.load_config_module(CONFIG).paradigm_model(
      "st_adapter", "tiny", dict(tiny.model.image), stacked=True)["adapter"]
  flops = {}
  for first in (0, 1):
    config = small_config("st_adapter,seq_transformer", ("model.adapter.first_layer", str(first)))
    model = build.build_model(config)
    batch = batch_of(config)
    params = nn.meta.unbox(model.init(jax.random.key(0), {k: v[:1] for k, v in batch.items()},
                                      train=False)["params"])
    blocks = params["img"]["encoder"]
    assert [("st_adapter" in blocks[f"layer_{i}"]) for i in range(2)] == [first == 0, True]
    tx, schedule = optimizer.make_optimizer(config.optimizer, params, total_steps=10)
    state = step_lib.TrainState(
        step=np.int32(0), params=params, opt_state=tx.init(params), rng=jax.random.key(0),
        nonfinite=np.int32(0), extras={})
    fn = jax.jit(step_lib.make_train_step(
        build_task(config, model), tx, schedule,
        frozen=optimizer.frozen_mask(config.optimizer, params)))
    flops[first] = compiled_flops(fn, state, batch)
  assert flops[1] < 0.9 * flops[0], flops
  with pytest.raises(ValueError, match="first_layer=2"):
    config = small_config("st_adapter,seq_transformer", ("model.adapter.first_layer", "2"))
    build.build_model(config).init(jax.random.key(0), {k: v[:1] for k, v in batch.items()},
                                   train=False)


def compiled_flops(fn, *args) -> float:
  """XLA's FLOP count of the jitted `fn` compiled for `args` (one partition's, on one
  device)."""
  cost = fn.lower(*args).compile().cost_analysis()
  return (cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"]


def _with_optimizer(paradigm, *overrides):
  """(config, model, tx, schedule, state on the host) of the paradigm's small config with its
  own optimizer (parameter groups, AdamW, 10-step schedule)."""
  from vlx.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  from vlx.train import optimizer, trainer  # pylint: disable=g-import-not-at-top
  config = small_config(paradigm, *overrides)
  model = build.build_model(config)
  tx, schedule = optimizer.make_optimizer(config.optimizer, _abstract(config, model),
                                          total_steps=10)
  state, _ = trainer.create_state(config, model, tx, mesh_of(1, 1, 1, 1),
                                  mesh_lib.rules_from_config(config.sharding))
  return config, model, tx, schedule, jax.device_get(state)


def _abstract(config, model):
  batch = {k: v[:1] for k, v in build.dummy_batch(config).items()}
  return jax.eval_shape(lambda r: nn.meta.unbox(model.init(r, batch, train=False)["params"]),
                        jax.random.key(0))


def _flat(params):
  from vlx.train.optimizer import param_path  # pylint: disable=g-import-not-at-top
  return {param_path(p): np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(
      jax.device_get(params))[0]}


@pytest.mark.parametrize("paradigm", ["aim"])  # adapters, frame mask, temporal attention
def test_sharded_transfer_step_equals_the_single_device_step(paradigm):
  """One step (padded frames masked) on 1 device and on the 2x2x2 mesh: the same loss,
  gradients and params (sgd(1): params - grads)."""
  from vlx.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  from vlx.train import trainer  # pylint: disable=g-import-not-at-top
  config, model, params = built(paradigm)
  config.batch_size = 8
  tx = optax.sgd(1.0)
  state, _ = trainer.create_state(config, model, tx, mesh_of(1, 1, 1, 1),
                                  mesh_lib.rules_from_config(config.sharding))
  # Adapter outputs start at zero; move every weight so the adapters' gradients are real.
  state = jax.device_get(state)
  state = state.replace(params=perturbed(params, 0.02))
  batch = batch_of(config, b=8)
  # Every gradient, the locked tower's too (sgd(1): the update is the gradient).
  p1, m1 = one_train_step(config, model, state, mesh_of(1, 1, 1, 1), tx, batch,
                          skip_frozen=False)
  p8, m8 = one_train_step(config, model, state, mesh_of(2, 2, 2, 8), tx, batch,
                          skip_frozen=False)
  np.testing.assert_allclose(m8["train/loss"], m1["train/loss"], rtol=1e-5)
  np.testing.assert_allclose(m8["train/grad_norm"], m1["train/grad_norm"], rtol=1e-4)
  assert_trees_close(p1, p8, atol=2e-5, rtol=1e-4, what="after step")


def test_image_model_starts_an_adapted_paradigm_through_main(video_data_dir, tmp_path):
  """As the docs run it, with no image model named: `st_adapter,smoke` trains `image,smoke`
  first (beside the workdir, in init_runs/, with the paradigm's tower overrides), then starts
  from it. Its image tower and projection are the image model's bit for bit after training
  (locked), the adapters are new, the text side trained on, and the video evaluators report.
  A second paradigm run beside it reuses that image model without training it again."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  from vlx import main as vlx_main  # pylint: disable=g-import-not-at-top
  small = [f"--config.data.source.data_dir={video_data_dir}", "--config.model.image.depth=1",
           "--config.model.text.depth=1"]
  video = tmp_path / "st_adapter"
  assert vlx_main.main([f"--config={CONFIG}:st_adapter,smoke", f"--workdir={video}",
                        *small]) in (0, None)
  (image,) = (tmp_path / "init_runs").iterdir()
  assert image.name.startswith("video_transfer_py_image_smoke-"), image.name
  final = {k: v for r in read_metrics(video) if r["step"] == 4 for k, v in r.items()}
  for name in ("twins/accuracy", "twins_shuffled/accuracy", "retrieval/static/t2v_r1",
               "retrieval/static/matched_t2v_r1"):
    assert name in final, sorted(final)
  restore = lambda d: _flat(ocp.PyTreeCheckpointer().restore(  # noqa: E731
      str(d / "checkpoints" / "4" / "state"))["params"])
  before, after = restore(image), restore(video)
  adapters = [k for k in after if ADAPTED.fullmatch(k)]
  assert adapters and not any(k in before for k in adapters)
  for path, value in after.items():
    if path.startswith(("img/", "img_proj/")) and path not in adapters:
      np.testing.assert_array_equal(value, before[path], err_msg=path)
  assert not np.array_equal(after["txt_proj/kernel"], before["txt_proj/kernel"])

  # The same paradigm fine-tuned for video QA and grounding (`qa`: its video side as the QA
  # model's video tower, whose image tower settings map onto the image run's) reuses that
  # image model: its tower starts from it and stays locked but for the adapters.
  metrics = (image / "metrics.jsonl").read_bytes()
  qa = tmp_path / "st_adapter_qa"
  assert vlx_main.main([f"--config={CONFIG}:st_adapter,qa,smoke", f"--workdir={qa}",
                        "--config.total_steps=2", small[0], "--config.model.video.image.depth=1",
                        "--config.model.text.depth=1"]) in (0, None)
  assert (image / "metrics.jsonl").read_bytes() == metrics
  with open(qa / "config.json") as f:
    assert json.load(f)["init_from"] == str(image)
  final = {k: v for r in read_metrics(qa) if r["step"] == 2 for k, v in r.items()}
  for name in ("qa/open/accuracy", "qa/mc/accuracy", "qa_shuffled/open/accuracy",
               "grounding/miou", "grounding/r1_iou50"):
    assert name in final, sorted(final)
  tuned = _flat(ocp.PyTreeCheckpointer().restore(str(qa / "checkpoints" / "2" / "state"))[
      "params"])
  scope = "video_tower/"
  inside = [k[len(scope):] for k in tuned if k.startswith(scope + "img")]
  assert any(ADAPTED.fullmatch(k) for k in inside)
  for path in inside:
    if not ADAPTED.fullmatch(path):
      np.testing.assert_array_equal(tuned[scope + path], before[path], err_msg=path)
  assert not np.array_equal(tuned["txt/token_embedding"], before["txt/token_embedding"])


def _qa_batch():
  """Two 8-frame videos with 3 questions, 4 choices and a grounding query each."""
  rng = np.random.default_rng(0)
  text = lambda *shape: rng.integers(3, 64, shape).astype(np.int32)  # noqa: E731
  return {"video": rng.uniform(-1, 1, (2, 8, 32, 32, 3)).astype(np.float32),
          "question": text(2, 3, 8), "choices": text(2, 4, 8), "query": text(2, 8)}


def test_frozen_paradigms_send_no_gradient_into_the_image_tower():
  """Without the optimizer's lr-0 groups: the frozen paradigms' video embedding has exactly
  zero gradient on every image weight (seqTransf reads the frame embeddings, EVL also the
  patch tokens), while the adapted paradigm's does not."""
  for paradigm, frozen in (("seq_transformer", True), ("evl", True), ("st_adapter", False)):
    config, model, params = built(paradigm)
    params = perturbed(params, 0.02)
    video = batch_of(config, padded=False)["video"]
    # Jitted: one compile, not an op-by-op backward pass (the zeros are exact either way:
    # stop_gradient gives symbolic zeros, not a computed cancellation).
    grads = _flat(jax.jit(jax.grad(lambda p: model.apply(  # noqa: B023
        {"params": p}, video, method="encode_video").sum()))(params))
    image = {k: v for k, v in grads.items() if k.startswith(("img/", "img_proj/"))
             and not ADAPTED.fullmatch(k)}
    assert image and all(not np.any(v) for v in image.values()) == frozen, paradigm
    assert any(np.any(v) for k, v in grads.items() if k.startswith("temporal/") or
               ADAPTED.fullmatch(k)), paradigm


@pytest.mark.parametrize("paradigm", ["evl", "aim", "xclip", "evl,seq_transformer"])
def test_every_paradigm_builds_as_a_qa_tower(paradigm):
  """`qa` on the paradigms the order test does not build: the transfer tower takes each
  one's adapters and temporal module (X-CLIP's without its text prompts)."""
  # Two image blocks: EVL reads the last two (one per decoder layer).
  config = small_config(f"{paradigm},qa", ("model.video.image.depth", "2"),
                        ("model.video.image.width", "32"), ("model.video.image.num_heads", "2"),
                        ("model.video.embed_dim", "16"), ("model.video.width", "32"),
                        ("model.fusion_heads", "2"), ("model.fusion_depth", "1"), base=False)
  model = build.build_model(config)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), _qa_batch(),
                                             train=False)["params"])
  assert {"video_tower", "txt", "fusion", "answer_head", "span_head"} <= set(shapes)
  tower = set(shapes["video_tower"])
  assert tower >= {"img", "img_proj", "to_width"}, tower
  assert ("temporal" in tower) == (paradigm != "aim"), tower
  assert "prompts" not in str(jax.tree_util.tree_structure(shapes))


@pytest.mark.parametrize("paradigm", ["mean_pool", "seq_transformer"])
def test_qa_model_reads_frame_order_only_through_a_temporal_paradigm(paradigm):
  """`qa`: the paradigm's video side gives fusion one token per frame. With trained-looking
  weights, mean pooling's answers do not change when the frames are shuffled (fusion sees a
  set of frame tokens) and its per-frame span logits move with the frames; the temporal
  transformer's answers change."""
  config = small_config(f"{paradigm},qa", ("model.video.image.depth", "2"),
                        ("model.video.image.width", "32"), ("model.video.image.num_heads", "2"),
                        ("model.video.embed_dim", "16"), ("model.video.width", "32"),
                        ("model.fusion_heads", "2"), ("model.fusion_depth", "1"),
                        base=False)
  model = build.build_model(config)
  batch = _qa_batch()
  params = model.init(jax.random.key(0), batch, train=False)["params"]
  params = perturbed(nn.meta.unbox(params), 0.05)
  run = jax.jit(lambda b: model.apply({"params": params}, b, train=False))
  perm = np.array([3, 0, 6, 1, 7, 2, 5, 4])
  out, moved = run(batch), run(dict(batch, video=batch["video"][:, perm]))
  answers = float(np.abs(out["vqa_logits"] - moved["vqa_logits"]).max())
  if paradigm == "mean_pool":
    assert answers < 1e-4, answers
    np.testing.assert_allclose(moved["choice_logits"], out["choice_logits"], atol=1e-4)
    np.testing.assert_allclose(moved["span_logits"], out["span_logits"][:, perm], atol=1e-4)
  else:
    assert answers > 1e-2, answers


def test_xclip_evaluators_score_every_text_as_each_video_prompts_it():
  """X-CLIP's text depends on the video: the video evaluators score (video, caption) pairs
  through `video_text_similarity`, `chunk` texts at a time (the last chunk padded), on any
  subset of videos and captions; the result equals one direct call on all pairs. Twin
  accuracy from such a score table equals the one from embeddings whose dot products it
  holds (the [video, video's captions, slot] layout the evaluator builds)."""
  from types import SimpleNamespace  # pylint: disable=g-import-not-at-top
  from vlx.evals.common import EvalContext  # pylint: disable=g-import-not-at-top
  from vlx.families.video import evals  # pylint: disable=g-import-not-at-top
  config, model, params = built("xclip")
  params = perturbed(params, 0.05)  # alpha leaves 0: the prompts move the texts
  rng = np.random.default_rng(0)
  n, k = 10, 30                     # 300 captions: two chunks of 256, the second padded
  video = rng.uniform(-1, 1, (n, 8, 32, 32, 3)).astype(np.float32)
  tokens = rng.integers(3, 64, (n * k, 8)).astype(np.int32)
  apply = lambda method, *a: model.apply({"params": params}, *a, method=method)  # noqa: E731
  emb, context = jax.jit(lambda v: apply("video_features", v))(video)
  text = np.asarray(jax.jit(lambda t: apply("text_features", t))(tokens)).reshape(n, k, -1)
  e = {"video": np.asarray(emb), "context": np.asarray(context), "text": text}
  split = evals.VideoTextSplit.__new__(evals.VideoTextSplit)
  split.ctx = EvalContext(model=model, mesh=mesh_of(2, 2, 2, 8), handle=None,
                          data_config=None, batch_size=4)
  split.reader = SimpleNamespace(batch_size=4)
  videos, texts_of = np.array([3, 7, 1]), np.array([2, 9, 5])
  got = split.scores(params, e, videos, texts_of)
  want = np.asarray(jax.jit(lambda v, c, t: apply("video_text_similarity", v, c, t))(
      e["video"][videos], e["context"][videos], text[texts_of].reshape(-1, text.shape[-1])))
  np.testing.assert_allclose(got, want.reshape(3, 3, k), atol=1e-5)
  unprompted = np.einsum("vd,tkd->vtk", e["video"], text / np.linalg.norm(
      text, axis=-1, keepdims=True))
  assert np.abs(split.scores(params, e, np.arange(n), np.arange(n)) - unprompted).max() > 1e-3

  vid = rng.normal(size=(6, 4))
  txt = rng.normal(size=(6, 3, 4))
  pairs = [(0, 3), (1, 4), (2, 5)]
  from_scores = evals.twin_accuracy(None, None, pairs, scores=np.einsum("vd,tkd->vtk", vid, txt))
  from_embeddings = evals.twin_accuracy(vid, txt, pairs)
  assert from_embeddings["v2t"] != from_embeddings["t2v"]  # the directions are told apart
  for name in ("accuracy", "v2t", "t2v"):
    np.testing.assert_allclose(from_scores[name], from_embeddings[name], err_msg=name)


def _split_of(model, read, batch_size=4):
  """A VideoTextSplit with its evaluation context on a 2x2x2 mesh, whose reading of the split
  returns `read` (the embeddings an evaluator would get)."""
  from types import SimpleNamespace  # pylint: disable=g-import-not-at-top
  from vlx.evals.common import EvalContext  # pylint: disable=g-import-not-at-top
  from vlx.families.video import evals  # pylint: disable=g-import-not-at-top
  stub = type("ReadSplit", (evals.VideoTextSplit,), {"__call__": lambda self, params: read})
  split = stub.__new__(stub)
  split.ctx = EvalContext(model=model, mesh=mesh_of(2, 2, 2, 8), handle=None,
                          data_config=None, batch_size=batch_size)
  split.reader = SimpleNamespace(batch_size=batch_size, skipped=0)
  split.conditioned, split.reranks = False, True
  return split


def test_cross_encoder_trains_on_hard_negatives_and_reranks_itc_shortlist():
  """`cross_encoder`: ITM over the positives and one hard negative per video and per caption
  (never a caption equal to the positive's); retrieval re-ranks each caption's ITC top k by
  the cross-encoder's log-odds plus ITC's logit, above the rest, which keep ITC's order; the
  twins are scored the same way (and by ITC alone under `itc/`)."""
  from vlx.families.video import evals  # pylint: disable=g-import-not-at-top
  from vlx.evals.common import contrastive_scale  # pylint: disable=g-import-not-at-top
  from vlx.objectives.hard_negatives import hard_negatives, positives  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  sims = rng.normal(size=(6, 6))
  tokens = rng.integers(3, 64, (6, 4))
  tokens[3] = tokens[0]                            # two equal captions
  same = np.asarray(positives(tokens))
  sims[0, 3] = sims[3, 0] = 9.0                    # the most similar is the equal caption
  picked = [np.asarray(hard_negatives(sims, jax.random.key(i), tokens)) for i in range(50)]
  assert not any(same[np.arange(6), p[0]].any() or same[p[1], np.arange(6)].any()
                 for p in picked)
  assert len({tuple(p[0]) for p in picked}) > 1    # drawn, not always the hardest

  config, model, params = built("cross_encoder")
  params = perturbed(params, 0.05)
  batch = batch_of(config, b=6)
  batch["text"][2] = batch["text"][5]
  train = lambda b: model.apply({"params": params}, b, train=True,  # noqa: E731
                                rngs={"dropout": jax.random.key(3)})
  out = train(batch)
  assert out["itm_logits"].shape == (18, 2)
  np.testing.assert_array_equal(out["itm_labels"], [1] * 6 + [0] * 12)
  batch["text"][:] = batch["text"][0]              # no negative left: the pairs drawn match
  np.testing.assert_array_equal(train(batch)["itm_labels"], [1] * 18)

  n, k = 10, 3
  # ITC's logits at scale 1 and a cross-encoder of larger weights, so it changes answers.
  params = dict(params, logit_scale=np.zeros_like(params["logit_scale"]),
                fusion=jax.tree.map(lambda x: 8 * x, params["fusion"]))
  video = rng.uniform(-1, 1, (n, 8, 32, 32, 3)).astype(np.float32)
  tokens = rng.integers(3, 64, (n, k, 8)).astype(np.int32)
  tokens[..., 6:] = 0
  apply = lambda method, *a: model.apply({"params": params}, *a, method=method)  # noqa: E731
  emb, frames = jax.jit(lambda v: apply("video_features", v))(video)
  text = np.asarray(jax.jit(lambda t: apply("encode_text", t))(tokens.reshape(n * k, 8)))
  e = {"video": np.asarray(emb), "context": np.asarray(frames),
       "text": text.reshape(n, k, -1), "tokens": tokens,
       "captions": np.array([[f"c{i}_{j}" for j in range(k)] for i in range(n)], object),
       "kind": np.array(["static"] * 4 + ["temporal"] * 6, object),
       "concept": np.array(["scene"] * 4 + ["direction"] * 6, object),
       "twin": np.array([-1] * 4 + [5, 4, 7, 6, 9, 8]), "_index": np.arange(n)}
  split = _split_of(model, e)
  everyone = np.repeat(np.arange(n), n * k)
  captions = np.tile(np.arange(n * k), n)
  full = split.match(params, e, everyone, captions).reshape(n, n * k)    # [videos, captions]
  direct = np.asarray(jax.jit(lambda b: apply("itm_scores", b))(
      {"frames": e["context"][everyone], "text": tokens.reshape(n * k, 8)[captions]}))
  itc = np.einsum("vd,cd->vc", e["video"], text)
  scale = contrastive_scale(params)
  np.testing.assert_allclose(full, (direct + scale * itc.reshape(-1)).reshape(n, n * k),
                             rtol=1e-5, atol=1e-5)
  for shortlist in (4, n):
    scores = split.reranked(params, e, np.arange(n), shortlist)              # [n, n * k]
    for q in range(n * k):
      top = np.argsort(-itc[:, q], kind="stable")[:shortlist]
      order = np.argsort(-scores[:, q], kind="stable")
      assert set(order[:shortlist]) == set(top)   # in the cross-encoder's order (to
      assert np.all(np.diff(full[order[:shortlist], q]) <= 1e-5)  # batching's rounding)
      rest = [v for v in np.argsort(-itc[:, q], kind="stable") if v not in top]
      assert list(order[shortlist:]) == rest
  assert not np.array_equal(split.reranked(params, e, np.arange(n), n).argmax(0),
                            itc.argmax(0))                   # the re-ranker changes answers

  retrieval = evals.VideoRetrieval.__new__(evals.VideoRetrieval)
  retrieval.split, retrieval.chunk, retrieval.k = split, 1024, n
  got = retrieval(params)
  assert got["t2v_r1"] == np.mean(full.argmax(0) == np.repeat(np.arange(n), k))
  assert got["itc/t2v_r1"] == np.mean(itc.argmax(0) == np.repeat(np.arange(n), k))
  assert "static/itc/t2v_r1" in got and got["rerank_k"] == n
  twins = evals.Twins.__new__(evals.Twins)
  twins.split = split
  got = twins(params)
  pairs = [(4, 5), (6, 7), (8, 9)]
  s = full.reshape(n, n, k)
  want = evals.twin_accuracy(None, None, pairs, e["concept"], scores=s)
  assert got["accuracy"] == want["accuracy"] and got["num_pairs"] == 3
  assert got["itc/accuracy"] == evals.twin_accuracy(e["video"], e["text"], pairs)["accuracy"]

  # A fresh reading of padded clips: the scores are the model's with the frame mask given.
  mask = np.arange(8)[None] < rng.integers(3, 9, n)[:, None]
  emb, frames = jax.jit(lambda v, m: apply("video_features", v, m))(video, mask)
  e = dict(e, video=np.asarray(emb), context=np.asarray(frames), frame_mask=mask)
  e.pop("_match_cache")
  v, t = np.array([0, 3, 9, 9]), np.array([5, 0, 29, 4])
  direct = np.asarray(jax.jit(lambda b: apply("itm_scores", b))(
      {"frames": e["context"][v], "text": tokens.reshape(n * k, 8)[t], "frame_mask": mask[v]}))
  itc = np.einsum("pd,pd->p", e["video"][v], text[t])
  np.testing.assert_allclose(_split_of(model, e).match(params, e, v, t), direct + scale * itc,
                             rtol=1e-5, atol=1e-5)


def test_every_tiny_paradigm_starts_from_the_one_image_model():
  """Without image=DIR each tiny paradigm trains `:image` first, once, beside its workdir:
  every paradigm must name the same image run (a paradigm field inside `model.text`, which
  the image run inherits, once sent text_prompt to an image model of its own)."""
  from vlx.train import init_run  # pylint: disable=g-import-not-at-top
  dirs = set()
  for paradigm in PARADIGMS + ("text_prompt",):
    config = config_lib.load_config_file(f"{CONFIG}:{paradigm}")
    dirs.add(init_run.init_run_dir(config, init_run.init_run_config(config), "/w/run"))
  assert len(dirs) == 1, sorted(dirs)
  config = config_lib.load_config_file(f"{CONFIG}:text_prompt")
  assert config.model.text_prompts > 0 and "prompts" not in config.model.text
  # `where`: every paradigm names one other image run, whose stills take frame captions.
  where = {init_run.init_run_dir(c, init_run.init_run_config(c), "/w/run") for c in (
      config_lib.load_config_file(f"{CONFIG}:{p},where") for p in ("mean_pool", "xclip"))}
  assert len(where) == 1 and not where & dirs, where
  image = init_run.init_run_config(config_lib.load_config_file(f"{CONFIG}:aim,where"))
  assert "still_caption(0.5)" in image.data.pp_train
  # The where image model trains 3000 steps, the plain one 1500 (docs: IMAGE_3000).
  assert image.total_steps == 3000
  assert init_run.init_run_config(config).total_steps == 1500
  with pytest.raises(ValueError, match="where"):
    config_lib.load_config_file(f"{CONFIG}:aim,where,image=/w/clip")


def test_compare_video_runs_each_stage_and_merges_rows_into_one_table(tmp_path, monkeypatch,
                                                                       capsys):
  """experiments/compare_video.py's driver, its training runs replaced by ones that write
  metrics: each row's retrieval and QA stages run with the row's variant words (a stacked row's
  `+` spelt `,`), a paradigm whose QA model is another's shows that one's QA figures, a later
  invocation that reruns one stage keeps the other stage's figures, and the table and its plot
  are written."""
  cv = compare_video_module()
  calls = []

  def fake_run(spec, workdir, flags):
    calls.append(spec)
    import os  # pylint: disable=g-import-not-at-top
    os.makedirs(workdir, exist_ok=True)
    score = 0.25 + 0.5 * (len(calls) % 2)  # tells the stages' runs apart
    metrics = ({"qa/open/accuracy": score, "grounding/miou": 0.9} if ",qa," in spec else
               {"twins/accuracy": score, "retrieval/static/t2v_r1": 0.4})
    with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
      f.write(json.dumps({"step": 1, "train/examples_per_s": 100.0}) + "\n")
      f.write(json.dumps({"step": 2, **metrics}) + "\n")
    with open(os.path.join(workdir, "log.txt"), "a") as f:
      f.write(f"\n$ {spec}\ntrained\n")
    return 12.0

  benched = []

  def fake_bench(rows, rounds, steps, out):
    benched.append(list(rows))
    return {row: 50.0 + len(benched) for row in rows}

  monkeypatch.setattr(cv, "run", fake_run)
  monkeypatch.setattr(cv, "bench", fake_bench)
  monkeypatch.setattr(cv, "trainable", lambda paradigm: (1000, 2000))
  out, image = tmp_path / "cmp", tmp_path / "image"
  rows = "seq_transformer,cross_encoder,st_adapter+seq_transformer"
  argv = ["compare_video.py", f"--out={out}", f"--image={image}", f"--paradigms={rows}",
          "--steps=10", "--qa_steps=5"]
  monkeypatch.setattr("sys.argv", argv)
  cv.main()
  assert calls == [f"seq_transformer,image={image}", f"seq_transformer,qa,image={image}",
                   f"cross_encoder,image={image}",
                   f"st_adapter,seq_transformer,image={image}",
                   f"st_adapter,seq_transformer,qa,image={image}"]
  results = {r["paradigm"]: r for r in json.loads((out / "results.json").read_text())}
  assert results["cross_encoder"]["qa_same_as"] == "seq_transformer"
  assert (results["cross_encoder"]["metrics"]["qa/open/accuracy"]
          == results["seq_transformer"]["metrics"]["qa/open/accuracy"] == 0.25)
  assert results["st_adapter+seq_transformer"]["metrics"]["twins/accuracy"] == 0.25
  table = capsys.readouterr().out
  # clips/s from the side-by-side timing of every row in the table, not the training logs.
  assert benched == [["seq_transformer", "cross_encoder", "st_adapter+seq_transformer"]]
  assert "| st_adapter+seq_transformer | adapted | 1k of 2k | 51 | 12 | 0.250 |" in table
  assert results["st_adapter+seq_transformer"]["train_clips"] == 100.0
  # Rerun the QA stage of one row only: its retrieval figures stay, its QA ones change; the
  # timing reruns over every row of the table (its figures compare within one run).
  calls.clear()
  monkeypatch.setattr("sys.argv", argv[:3] + ["--paradigms=seq_transformer", "--steps=0"])
  cv.main()
  assert calls == [f"seq_transformer,qa,image={image}"]
  assert benched[-1] == benched[0] and "| 52 |" in capsys.readouterr().out
  again = {r["paradigm"]: r for r in json.loads((out / "results.json").read_text())}
  assert again["seq_transformer"]["metrics"]["qa/open/accuracy"] == 0.75
  assert again["seq_transformer"]["metrics"]["twins/accuracy"] == 0.75
  assert again["cross_encoder"]["metrics"]["qa/open/accuracy"] == 0.75  # follows its QA model
  # And its retrieval stage only: the QA figures stay.
  calls.clear()
  monkeypatch.setattr("sys.argv", argv[:3] + ["--paradigms=seq_transformer", "--qa_steps=0",
                                               "--steps=10", "--bench_rounds=0"])
  cv.main()
  assert calls == [f"seq_transformer,image={image}"]
  assert len(benched) == 2 and "| 52 |" in capsys.readouterr().out  # earlier timing kept
  last = {r["paradigm"]: r for r in json.loads((out / "results.json").read_text())}
  assert last["seq_transformer"]["metrics"]["qa/open/accuracy"] == 0.75
  pytest.importorskip("matplotlib")
  assert (out / "compare_video.png").stat().st_size > 1000


@pytest.mark.parametrize("pool", ["gap", "cls"])
def test_evl_decoder_layers_read_the_states_of_the_towers_last_blocks(pool):
  """EVL as the paper builds it: decoder layer i reads the tower's block L - depth + i. The
  ViT hands out those blocks' states exactly (the last one is the stream before ln_final, the
  one before it what a one-block-shorter tower gives; patch tokens only), each decoder layer
  reads its own, and the paradigm's model asks its tower for the last blocks (a LayerNorm per
  read layer), as many as a smoke run's shrunk tower has."""
  from vlx.families.video_transfer.temporal import (  # pylint: disable=g-import-not-at-top
      EvlDecoder, tower_layers_read)
  from vlx.models.vit import ViT  # pylint: disable=g-import-not-at-top
  fields = dict(patch_size=8, width=32, depth=3, num_heads=2, posemb="sincos2d", pool=pool)
  image = np.random.default_rng(0).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
  vit = ViT(**fields, hidden_layers=(1, 2))
  params = vit.init(jax.random.key(0), image)["params"]
  _, tokens, hidden = vit.apply({"params": params}, image)
  assert len(hidden) == 2 and hidden[0].shape == tokens.shape
  _, last = ViT(**fields, prenorm_tokens=True).apply({"params": params}, image)
  np.testing.assert_array_equal(hidden[1], last)
  shorter = {k: v for k, v in params.items() if k != "encoder"}
  shorter["encoder"] = {k: v for k, v in params["encoder"].items() if k != "layer_2"}
  _, before = ViT(**dict(fields, depth=2), prenorm_tokens=True).apply({"params": shorter}, image)
  np.testing.assert_array_equal(hidden[0], before)
  assert not np.allclose(hidden[0], hidden[1])
  # Each decoder layer reads its own block's states: swapping either changes the output.
  rng = np.random.default_rng(1)
  x = rng.normal(size=(2, 4, 16)).astype(np.float32)
  a, b = (rng.normal(size=(2, 4, 4, 32)).astype(np.float32) for _ in range(2))
  evl = EvlDecoder(depth=2, num_heads=2, layers_read=2)
  evl_params = nn.meta.unbox(evl.init(jax.random.key(0), x, None, (a, b))["params"])
  evl_params = perturbed(evl_params, 0.05)  # the output projection off zero
  run = lambda tokens: evl.apply({"params": evl_params}, x, None, tokens)  # noqa: E731
  out = run((a, b))
  for other in ((b, b), (a, a), (b, a)):
    assert not np.allclose(out, run(other), atol=1e-5)
  with pytest.raises(ValueError, match="layers_read"):
    run(b)
  # The paradigm's model: its tower returns the last blocks' states to the decoder.
  assert tower_layers_read(dict(kind="evl", layers_read=2), 4) == (2, 3)
  assert tower_layers_read(dict(kind="seq_transformer"), 4) == ()
  _, model, params = built("evl")
  assert {"ln_memory_0", "ln_memory_1"} <= set(params["temporal"]), set(params["temporal"])
  assert model.temporal["layers_read"] == 2
  smoke = config_lib.load_config_file(f"{CONFIG}:b16,evl,smoke")
  assert smoke.model.image.depth == smoke.model.temporal.layers_read == 2
  assert config_lib.load_config_file(f"{CONFIG}:b16,evl").model.temporal.layers_read == 4


def test_evl_time_conv_reads_each_token_in_its_neighbouring_frames():
  """EVL's local temporal convolution (`time_conv`): depthwise over time, zero padded, equal
  to XLA's grouped convolution; a padded frame never reaches a real one; it changes what the
  decoder reads (so a token's change between frames reaches the queries) while the model
  still starts as the image model (the output projection at zero)."""
  from vlx.families.video_transfer.temporal import (  # pylint: disable=g-import-not-at-top
      EvlDecoder, depthwise_time_conv)
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 5, 3, 4)).astype(np.float32)   # [B, T, N, C]
  kernel = rng.normal(size=(3, 4)).astype(np.float32)
  bias = rng.normal(size=(4,)).astype(np.float32)
  got = depthwise_time_conv(x, kernel, bias)
  lhs = x.transpose(0, 2, 3, 1).reshape(6, 4, 5)          # [B * N, C, T]
  want = jax.lax.conv_general_dilated(lhs, kernel.T[:, None, :], (1,), [(1, 1)],
                                      feature_group_count=4)
  want = want.reshape(2, 3, 4, 5).transpose(0, 3, 1, 2) + bias
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  mask = np.array([[True] * 5, [True] * 3 + [False] * 2])
  noisy = x.copy()
  noisy[1, 3:] = 100.0
  np.testing.assert_array_equal(depthwise_time_conv(noisy, kernel, bias, mask)[1, :3],
                                depthwise_time_conv(x, kernel, bias, mask)[1, :3])
  # Frame embeddings [B, T, C] too: the same as one token per frame.
  np.testing.assert_allclose(depthwise_time_conv(x[:, :, 0], kernel, bias, mask),
                             depthwise_time_conv(x[:, :, :1], kernel, bias, mask)[:, :, 0],
                             rtol=1e-6)
  # In the decoder: off at init (the projection at zero), and it changes what is read.
  frames = rng.normal(size=(2, 5, 16)).astype(np.float32)
  tokens = rng.normal(size=(2, 5, 4, 32)).astype(np.float32)
  evl = EvlDecoder(depth=1, num_heads=2, time_conv=True)
  params = nn.meta.unbox(evl.init(jax.random.key(0), frames, None, tokens)["params"])
  drawn = params["time_conv_0"]["kernel"]
  assert drawn.shape == (3, 32) and not params["time_conv_0"]["bias"].any()
  assert np.abs(drawn).max() <= 3 ** -0.5 and np.abs(drawn).max() > 0.4  # PyTorch's range
  assert config_lib.load_config_file(f"{CONFIG}:evl").model.temporal.time_conv  # the recipe
  np.testing.assert_array_equal(evl.apply({"params": params}, frames, None, tokens), frames)
  params = perturbed(params, 0.05)
  run = lambda p: evl.apply({"params": p}, frames, None, tokens)  # noqa: E731
  still = dict(params, time_conv_0=jax.tree.map(np.zeros_like, params["time_conv_0"]))
  assert not np.allclose(run(params), run(still), atol=1e-5)


def test_evl_per_frame_reads_each_frame_on_its_own_then_the_frames_transformer():
  """`per_frame`: each frame's queries read only that frame's tokens (without the temporal
  convolution, another frame's tokens leave a frame's output bit for bit alike; reading the
  whole clip, every frame's output moves), each frame its own output; `frames_depth` stacks
  seqTransf's transformer over the frames (padded ones hidden). `:evl,seq_transformer` is
  the frozen paradigm with both, at lr 1e-3 (tiny), a frozen row in compare_video."""
  from vlx.families.video_transfer.temporal import EvlDecoder  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  frames = rng.normal(size=(2, 5, 16)).astype(np.float32)
  tokens = rng.normal(size=(2, 5, 4, 32)).astype(np.float32)
  other = tokens.copy()
  other[:, 3] += 1.0   # frame 3's tokens changed

  def run(**fields):
    evl = EvlDecoder(depth=1, num_heads=2, **fields)
    params = perturbed(nn.meta.unbox(evl.init(jax.random.key(0), frames, None, tokens)["params"]),
                       0.05)
    return lambda t, m=None: np.asarray(evl.apply({"params": params}, frames, m, t))

  per_frame = run(per_frame=True)
  moved = np.abs(per_frame(tokens) - per_frame(other)).max(axis=(0, 2))
  assert moved[3] > 1e-3 and not moved[[0, 1, 2, 4]].any(), moved
  clip = run()
  assert (np.abs(clip(tokens) - clip(other)).max(axis=(0, 2)) > 1e-4).all()
  stacked = run(per_frame=True, frames_depth=1, time_conv=True)
  moved = np.abs(stacked(tokens) - stacked(other)).max(axis=(0, 2))
  assert (moved > 1e-4).all(), moved   # the transformer over the frames spreads frame 3
  with pytest.raises(ValueError, match="set per_frame=True"):
    run(frames_depth=1)
  mask = np.array([[True] * 5, [True] * 3 + [False] * 2])
  noisy = tokens.copy()
  noisy[1, 3:] = 100.0
  np.testing.assert_allclose(stacked(tokens, mask)[1, :3], stacked(noisy, mask)[1, :3],
                             atol=1e-6)
  config = config_lib.load_config_file(f"{CONFIG}:evl,seq_transformer,where")
  temporal = config.model.temporal
  assert temporal.kind == "evl" and temporal.per_frame and temporal.frames_depth == 2
  assert config.model.frozen_image and config.optimizer.lr == 1e-3
  plain = config_lib.load_config_file(f"{CONFIG}:evl")
  assert not plain.model.temporal.per_frame and plain.optimizer.lr == 5e-4
  cv = compare_video_module()
  assert cv.KIND["evl+seq_transformer"] == "frozen"
  assert "evl+seq_transformer" in cv.DEFAULT_ROWS
