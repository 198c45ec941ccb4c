"""The unified prefix-LM (vlx/families/unified): its text layout, the generator (cached equals
uncached, padding invisible, constrained outputs always parse), the answer log-probs against
the training forward, box AP against pycocotools, and one step on a 2x2x2 mesh against one
device."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vlx import build, config_lib
from vlx import decode as decode_lib
from vlx import decode_constraints
from vlx.data.loc_tokens import parse_box, parse_detections
from vlx.evals.box_ap import box_ap, box_or_class
from vlx.families.unified.evals import grounding_scores
from vlx.families.unified import generate as gen
from vlx.families.unified import tasks as T
from vlx.families.unified.model import PrefixLM
from vlx.objectives.prefix_lm import suffix_loss
from vlx.parallel import mesh as mesh_lib
from vlx.token_ids import EOS_ID
from vlx.train import trainer
from vlx_testlib import REPO, assert_trees_close, mesh_of, one_train_step

VOCAB = T.Vocab(text_size=40, num_bins=16)
P, S = 6, 8


LAYOUTS = ["decoder_only", "encoder_decoder"]


def _model(layout="decoder_only", depth=2, loc_code=False):
  code = dict(start=VOCAB.loc.start, num_bins=VOCAB.num_bins) if loc_code else None
  return PrefixLM(image=dict(patch_size=8, width=32, depth=1, num_heads=2, stem="patch"),
                  decoder=dict(vocab_size=VOCAB.size, width=32, depth=depth, num_heads=4,
                               num_kv_heads=2, head_dim=8, mlp_dim=64),
                  layout=layout, encoder_depth=1 if layout == "encoder_decoder" else 0,
                  loc_code=code)


def _batch(n=4, seed=0):
  rng = np.random.default_rng(seed)
  rows = []
  for i in range(n):
    prompt = [VOCAB.task_token(T.TASKS[i % 4])] + list(rng.integers(3, 40, int(rng.integers(0, P))))
    target = list(rng.integers(3, 40, int(rng.integers(1, S))))
    rows.append(T.text_block(prompt, target, VOCAB, P, S))
  batch = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
  batch["image"] = rng.uniform(-1, 1, (n, 16, 16, 3)).astype(np.float32)
  return batch


def _params(model, batch, seed=0):
  params = model.init(jax.random.key(seed), batch)["params"]
  # Random init leaves the tied embedding small: sharpen the logits so greedy choices are
  # far from ties (a cached / uncached difference then shows as different ids).
  return jax.tree.map(lambda x: x * 3.0 if x.ndim == 2 else x, params)


def test_text_block_layout():
  b = T.text_block([50, 51], [7, 8, 9], VOCAB, prompt_len=4, target_len=5)
  np.testing.assert_array_equal(b["text_in"], [0, 0, 50, 51, VOCAB.sep, 7, 8, 9, EOS_ID, 0])
  np.testing.assert_array_equal(b["mask_ar"], [0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
  np.testing.assert_array_equal(b["input_mask"], [0, 0, 1, 1, 1, 1, 1, 1, 1, 0])
  # Scored: sep -> 7, 7 -> 8, 8 -> 9, 9 -> EOS; nothing else.
  np.testing.assert_array_equal(b["loss_mask"], [0, 0, 0, 0, 1, 1, 1, 1, 0, 0])
  np.testing.assert_array_equal(b["targets"][4:8], [7, 8, 9, EOS_ID])
  # Too long: each side loses its end; the prompt keeps its first token (the task's, or <bos>).
  b = T.text_block([50, 51, 52], [7, 8, 9], VOCAB, prompt_len=2, target_len=2)
  np.testing.assert_array_equal(b["text_in"], [50, 51, VOCAB.sep, 7, EOS_ID])


@pytest.mark.parametrize("layout", LAYOUTS)
def test_prompt_padding_and_suffix_padding_change_nothing(layout):
  """The same example with its prompt padded to another block length, and its suffix to
  another, gives the same loss: padding is neither attended to nor scored, and positions
  skip it."""
  model = _model(layout)
  base = _batch(4)
  params = _params(model, base)
  apply = jax.jit(model.apply)  # compiled per shape: faster than eager on the CPU
  loss = lambda b: float(suffix_loss(apply({"params": params}, b)["logits"],  # noqa: E731
                                     b["targets"], b["loss_mask"])[0])
  rng = np.random.default_rng(3)
  prompts = [[VOCAB.task_token("vqa")] + list(rng.integers(3, 40, 3)) for _ in range(4)]
  targets = [list(rng.integers(3, 40, 4)) for _ in range(4)]
  losses = []
  for p_len, s_len in ((4, 5), (9, 11)):
    rows = [T.text_block(p, t, VOCAB, p_len, s_len) for p, t in zip(prompts, targets)]
    b = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
    b["image"] = base["image"]
    losses.append(loss(b))
  np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)


@pytest.mark.parametrize("layout,method,loc_code", [
    ("decoder_only", "greedy", False), ("decoder_only", "beam", False),
    ("encoder_decoder", "greedy", False), ("decoder_only", "greedy", True)])
def test_cached_generation_equals_uncached(layout, method, loc_code):
  model = _model(layout, loc_code=loc_code)
  batch = _batch(4)
  params = _params(model, batch)
  if loc_code:  # the code reaches the output: location tokens are generated
    params = dict(params, loc_scale=jnp.asarray(30.0))
  ids = {}
  for cache in (True, False):
    cfg = decode_lib.DecodeConfig(method=method, max_len=8, beam_size=3, use_cache=cache)
    fn = jax.jit(gen.make_generate_fn(model, cfg, EOS_ID))
    prompt = {k: batch["text_in"][:, :P + 1] if k == "prompt" else batch[k][:, :P + 1]
              for k in ("prompt", "input_mask", "mask_ar")}
    ids[cache] = np.asarray(fn(params, batch["image"], prompt["prompt"], prompt["input_mask"],
                               prompt["mask_ar"]))
  np.testing.assert_array_equal(ids[True], ids[False])
  assert len({tuple(r) for r in ids[True]}) > 1  # not one constant output
  if loc_code:
    assert VOCAB.loc.is_loc(ids[True]).any()


def test_location_code_names_the_coordinate_of_the_patch_it_copies():
  """`loc_code`: a state holding a patch's code (its y half, or its x half) scores highest the
  location token of that patch centre's y (or x); and the model adds the code to the image
  tokens, location inputs and location logits only (other logits untouched)."""
  from vlx.families.unified.model import location_code, patch_code  # pylint: disable=g-import-not-at-top
  grid, width, bins = 8, 64, 32
  loc, patches = location_code(dict(num_bins=bins), width), patch_code(grid, width)
  centre = (np.arange(grid) + 0.5) / grid
  nearest = lambda v, b: abs((b + 0.5) / bins - v) <= 0.5 / bins + 1e-6  # noqa: E731
  for i, (r, c) in enumerate(np.ndindex(grid, grid)):
    y_half = np.concatenate([patches[i, :width // 2], np.zeros(width // 2)])
    x_half = np.concatenate([np.zeros(width // 2), patches[i, width // 2:]])
    assert nearest(centre[r], np.argmax(loc @ y_half)), (r, np.argmax(loc @ y_half))
    assert nearest(centre[c], np.argmax(loc @ x_half)), (c, np.argmax(loc @ x_half))
  batch = _batch(2)
  plain, coded = _model(), _model(loc_code=True)
  params = _params(plain, batch)
  a = plain.apply({"params": params}, batch)["logits"]
  b = coded.apply({"params": dict(params, loc_scale=jnp.asarray(0.0))}, batch)["logits"]
  assert not np.allclose(a, b)   # the image tokens and location inputs carry the code
  s, e = VOCAB.loc.start, VOCAB.loc.start + VOCAB.num_bins
  one = dict(params, loc_scale=jnp.asarray(1.0))
  embeds = coded.apply({"params": one}, batch["image"], method="image_embeds")
  want = plain.apply({"params": params}, batch["image"], method="image_embeds")
  np.testing.assert_allclose(np.asarray(embeds - want)[0], patch_code(2, 32), atol=1e-6)
  fixed = {k: np.asarray(v) for k, v in batch.items()}
  fixed["text_in"] = np.where(VOCAB.loc.is_loc(fixed["text_in"]), 5, fixed["text_in"])
  c0 = coded.apply({"params": dict(params, loc_scale=jnp.asarray(0.0))}, fixed)["logits"]
  c1 = coded.apply({"params": one}, fixed)["logits"]
  np.testing.assert_array_equal(np.asarray(c0)[..., :s], np.asarray(c1)[..., :s])
  assert not np.allclose(np.asarray(c0)[..., s:e], np.asarray(c1)[..., s:e])


@pytest.mark.parametrize("layout", LAYOUTS)
def test_answer_logp_equals_training_forward(layout):
  """The evaluators' teacher-forced answer log-probs are the training forward's: the
  log-softmax of `logits` at each suffix position, at the target token."""
  model = _model(layout)
  batch = _batch(4, seed=1)
  params = _params(model, batch)
  logits = model.apply({"params": params}, batch)["logits"]
  want = np.take_along_axis(np.asarray(jax.nn.log_softmax(logits)),
                            batch["targets"][..., None], -1)[..., 0]
  answer = batch["targets"][:, P:]                      # targets after sep, EOS, then padding
  lp = gen.make_answer_logp_fn(model)(params, batch["image"], batch["text_in"][:, :P + 1],
                                      batch["input_mask"][:, :P + 1], batch["mask_ar"][:, :P + 1],
                                      answer)
  scored = batch["loss_mask"][:, P:] > 0
  np.testing.assert_allclose(np.asarray(lp)[scored], want[:, P:][scored], atol=1e-5)
  assert np.all(np.asarray(lp)[~scored] == 0)


def test_constrained_outputs_of_a_random_model_always_parse():
  model = _model()
  batch = _batch(8, seed=2)
  params = _params(model, batch)
  names = [[3, 4], [3, 5], [6]]
  grammars = {
      "grounding": decode_constraints.grounding(VOCAB.size, VOCAB.loc.start, VOCAB.num_bins,
                                                EOS_ID),
      "detection": decode_constraints.detection(VOCAB.size, VOCAB.loc.start, VOCAB.num_bins,
                                                EOS_ID, names)}
  parse = {"grounding": lambda r: parse_box(r, VOCAB.loc, EOS_ID),
           "detection": lambda r: parse_detections(r, VOCAB.loc, EOS_ID, names)}
  prompt = (batch["text_in"][:, :P + 1], batch["input_mask"][:, :P + 1], batch["mask_ar"][:, :P + 1])
  for name, grammar in grammars.items():
    cfg = decode_lib.DecodeConfig(method="greedy", max_len=11)
    free = np.asarray(jax.jit(gen.make_generate_fn(model, cfg, EOS_ID))(
        params, batch["image"], *prompt))
    assert not all(parse[name](r) is not None for r in free), name
    for method in ("greedy", "sample"):
      cfg = decode_lib.DecodeConfig(method=method, max_len=11)
      ids = np.asarray(jax.jit(gen.make_generate_fn(model, cfg, EOS_ID, grammar))(
          params, batch["image"], *prompt, jax.random.key(0)))
      assert all(parse[name](r) is not None for r in ids), (name, method, ids)


def test_box_ap_matches_pycocotools():
  # pycocotools comes with pycocoevalcap (a dependency of vlx).
  from pycocotools import cocoeval  # pylint: disable=g-import-not-at-top
  from pycocotools.coco import COCO  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  dets, gts, images, anns, results = [], [], [], [], []
  for i in range(30):
    g = rng.integers(1, 4)
    gb = np.sort(rng.uniform(0, 1, (g, 2, 2)), axis=1).transpose(0, 2, 1).reshape(g, 4)
    gb = gb[:, [0, 2, 1, 3]]  # y0, x0, y1, x1
    gc = rng.integers(0, 3, g)
    d = rng.integers(0, 5)
    db = np.clip(np.concatenate([gb, gb])[:d] + rng.normal(0, 0.05, (min(d, 2 * g), 4)), 0, 1)
    db = np.concatenate([np.minimum(db[:, :2], db[:, 2:]), np.maximum(db[:, :2], db[:, 2:])], 1)
    dc = np.concatenate([gc, rng.integers(0, 3, g)])[:len(db)]
    ds = rng.uniform(0, 1, len(db))
    dets.append((db, ds, dc))
    gts.append((gb, gc))
    images.append({"id": i, "width": 100, "height": 100})
    xywh = lambda b: [b[1] * 100, b[0] * 100, (b[3] - b[1]) * 100, (b[2] - b[0]) * 100]  # noqa: E731
    for b, c in zip(gb, gc):
      anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(c), "bbox": xywh(b),
                   "area": xywh(b)[2] * xywh(b)[3], "iscrowd": 0})
    results += [{"image_id": i, "category_id": int(c), "bbox": xywh(b), "score": float(s)}
                for b, c, s in zip(db, dc, ds)]
  coco = COCO()
  coco.dataset = {"images": images, "annotations": anns,
                  "categories": [{"id": c} for c in range(3)]}
  coco.createIndex()
  ev = cocoeval.COCOeval(coco, coco.loadRes(results), "bbox")
  ev.evaluate(), ev.accumulate(), ev.summarize()
  ours = box_ap(dets, gts)
  np.testing.assert_allclose(ours["ap"], ev.stats[0], atol=1e-6)
  np.testing.assert_allclose(ours["ap50"], ev.stats[1], atol=1e-6)
  np.testing.assert_allclose(ours["ap75"], ev.stats[2], atol=1e-6)
  assert 0.05 < ours["ap"] < 0.95


def test_box_or_class_tells_a_missed_box_from_a_misnamed_one():
  """Image 0: object A found and named, object B found and misnamed; image 1: object C missed
  (the detection lies elsewhere). Boxes alone: 2 of 3 found, both ranked above the miss."""
  a, b, c = [0.1, 0.1, 0.4, 0.4], [0.5, 0.5, 0.9, 0.9], [0.2, 0.6, 0.5, 0.9]
  dets = [(np.array([a, b]), np.array([0.9, 0.8]), np.array([1, 3])),
          (np.array([[0.6, 0.0, 0.9, 0.3]]), np.array([0.7]), np.array([1]))]
  gts = [(np.array([a, b]), np.array([1, 2])), (np.array([c]), np.array([1]))]
  got = box_or_class(dets, gts)
  assert got["found_at_iou50"] == pytest.approx(2 / 3)
  assert got["class_accuracy_at_iou50"] == pytest.approx(1 / 2)
  # COCO's 101 recall points 0, 0.01, ..., 1: precision 1 at the 67 up to 2/3, none beyond.
  assert got["ap50_class_agnostic"] == pytest.approx(67 / 101)
  assert box_ap(dets, gts)["ap50"] < got["ap50_class_agnostic"]


def test_grounding_scores_split_small_from_large_and_loose_from_disjoint():
  """A large target hit, a large one missed by a loose box, a small one answered with a box
  on another object, a small one unparsable."""
  large, small = [0.1, 0.1, 0.5, 0.5], [0.6, 0.6, 0.8, 0.8]
  boxes = [np.array([large]), np.array([[0.3, 0.3, 0.7, 0.7]]), np.array([large]), None]
  got = grounding_scores(boxes, np.array([large, large, small, small]))
  assert got["accuracy_iou50"] == 0.25 and got["parse_rate"] == 0.75
  assert got["accuracy_iou50_large"] == 0.5 and got["accuracy_iou50_small"] == 0.0
  assert got["disjoint_rate"] == pytest.approx(1 / 3)   # of the parsed boxes
  assert got["miou"] == pytest.approx((1 + (0.2 * 0.2) / (0.32 - 0.04)) / 4)


def test_unified_step_on_2x2x2_mesh_equals_one_device():
  config = config_lib.load_config_file(f"{REPO}/configs/unified.py:tiny,smoke")
  # Small: compile time, not arithmetic, is the cost on the CPU.
  config_lib.apply_overrides(config, [
      ("model.image.depth", "1"), ("model.image.width", "32"), ("model.image.num_heads", "2"),
      ("model.decoder.depth", "2"), ("model.decoder.width", "32"),
      ("model.decoder.head_dim", "8"), ("model.decoder.mlp_dim", "64"), ("batch_size", "16")])
  rng = np.random.default_rng(0)
  vocab = T.Vocab(256, 32)
  assert config.model.decoder.vocab_size == vocab.size
  # The config's training layout: every example packs one block of each task.
  rows = [T.pack_blocks([T.text_block([vocab.task_token(t)] + list(rng.integers(3, 256, i % 5)),
                                      list(rng.integers(3, vocab.size, 1 + (i + j) % 7)),
                                      vocab, 6, 8, isolate=True)
                         for j, t in enumerate(T.TASKS)]) for i in range(16)]
  batch = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
  batch["image"] = rng.uniform(-1, 1, (16, 32, 32, 3)).astype(np.float32)
  tx = optax.sgd(1.0)
  model = build.build_model(config)
  rules = mesh_lib.rules_from_config(config.sharding)
  state, _ = trainer.create_state(config, model, tx, mesh_of(1, 1, 1, 1), rules)
  state = jax.device_get(state)
  p1, m1 = one_train_step(config, model, state, mesh_of(1, 1, 1, 1), tx, batch)
  p8, m8 = one_train_step(config, model, state, mesh_of(2, 2, 2, 8), tx, batch)
  np.testing.assert_allclose(m8["train/loss"], m1["train/loss"], rtol=1e-5)
  assert_trees_close(p1, p8, atol=2e-5, rtol=1e-4, what="after step")
  moved = max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(state.params),
                                                          jax.tree.leaves(p1)))
  assert moved > 1e-3


def test_soft_location_targets():
  """Location targets spread over neighbouring bins, others stay one-hot; a vanishing sigma
  is the hard loss, and a prediction one bin off costs less than one far off."""
  from vlx.objectives.prefix_lm import soft_location_targets  # pylint: disable=g-import-not-at-top
  v = VOCAB
  targets = np.array([[5, v.loc.start + 3, v.loc.start, v.loc.start + v.num_bins - 1]])
  soft = np.asarray(soft_location_targets(targets, v.size, v.loc.start, v.num_bins, 1.0))
  np.testing.assert_allclose(soft.sum(-1), 1.0, rtol=1e-6)
  assert soft[0, 0, 5] == 1.0
  loc = soft[0, 1, v.loc.start:v.loc.start + v.num_bins]
  assert loc.argmax() == 3 and loc[2] == loc[4] and 0 < loc[4] < loc[3]
  assert soft[0, 1, :v.loc.start].sum() == 0 and soft[0, 1, v.loc.start + v.num_bins:].sum() == 0
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(1, 4, v.size)).astype(np.float32)
  mask = np.ones((1, 4), np.float32)
  hard = suffix_loss(logits, targets, mask)[0]
  sharp = suffix_loss(logits, targets, mask, soft_location_targets(
      targets, v.size, v.loc.start, v.num_bins, 1e-3))[0]
  np.testing.assert_allclose(float(sharp), float(hard), rtol=1e-5)
  near, far = (np.full((1, 1, v.size), -10.0, np.float32) for _ in range(2))
  near[0, 0, v.loc.start + 4] = far[0, 0, v.loc.start + 12] = 10.0
  t, m = targets[:, 1:2], mask[:, :1]
  s1 = soft_location_targets(t, v.size, v.loc.start, v.num_bins, 1.0)
  assert float(suffix_loss(near, t, m, s1)[0]) < float(suffix_loss(far, t, m, s1)[0])


def test_packed_blocks_equal_each_block_alone():
  """Tasks packed onto one image (unified_pack's layout) are computed exactly as each isolated
  block alone with the image: same logits where scored, and the per-segment loss is the mean
  of the blocks' own losses."""
  model = _model()
  rng = np.random.default_rng(5)
  image = rng.uniform(-1, 1, (1, 16, 16, 3)).astype(np.float32)
  blocks = [T.text_block([VOCAB.task_token(t)] + list(rng.integers(3, 40, k)),
                         list(rng.integers(3, 40, m)), VOCAB, p, s, isolate=True)
            for t, k, m, p, s in (("vqa", 3, 2, 5, 3), ("grounding", 2, 4, 4, 6),
                                  ("caption", 0, 6, 2, 8))]
  packed = {k: v[None] for k, v in T.pack_blocks(blocks).items()}
  params = _params(model, {"image": image, **{k: v[None] for k, v in blocks[0].items()}})
  apply = jax.jit(model.apply)
  logits = np.asarray(apply({"params": params}, {"image": image, **packed})["logits"])
  start, losses = 0, []
  for blk in blocks:
    one = {"image": image, **{k: v[None] for k, v in blk.items()}}
    alone = np.asarray(apply({"params": params}, one)["logits"])
    n = len(blk["text_in"])
    scored = blk["loss_mask"] > 0
    np.testing.assert_allclose(logits[0, start:start + n][scored], alone[0][scored], atol=1e-4)
    losses.append(float(suffix_loss(alone, one["targets"], one["loss_mask"])[0]))
    start += n
  packed_loss = suffix_loss(logits, packed["targets"], packed["loss_mask"],
                            segment=packed["segment"])[0]
  np.testing.assert_allclose(float(packed_loss), np.mean(losses), rtol=1e-4)


def test_detection_order_raster_lists_objects_top_to_bottom_then_left_to_right():
  objects = [dict(box=(0.5, 0.1, 0.7, 0.3)), dict(box=(0.1, 0.6, 0.3, 0.8)),
             dict(box=(0.5, 0.05, 0.6, 0.2)), dict(box=(0.1, 0.2, 0.2, 0.3))]
  rng = np.random.default_rng(0)
  assert T.object_order(objects, "raster", rng).tolist() == [3, 1, 2, 0]
  drawn = {tuple(T.object_order(objects, "random", rng).tolist()) for _ in range(20)}
  assert all(sorted(d) == [0, 1, 2, 3] for d in drawn) and len(drawn) > 1
  with pytest.raises(ValueError, match="known: random, raster"):
    T.object_order(objects, "size", rng)
