"""The video-text family (vlx/families/video, configs/vivit.py): the smoke config trains,
checkpoints and evaluates through vlx.main, where the time-blind tower scores exactly 0.5 on
the twins; an oracle scores 1.0; retrieval ranks (ties included) on hand-made similarities.
About 20 s of CPU, nearly all of it compiling the smoke step."""

import math

import numpy as np
import pytest

from vlx import build, config_lib
from vlx.families.video import evals as video_evals
from vlx_testlib import (REPO, checkpoint_steps, read_metrics,  # noqa: F401
                         shapes_data_dir, video_data_dir)

CONFIG = str(REPO / "configs" / "vivit.py")


def test_smoke_config_trains_checkpoints_and_scores_a_time_blind_tower_at_half(
    video_data_dir, tmp_path):
  """`frame_mean,smoke` through vlx.main (one run keeps this file cheap: the ViViT variant
  differs only in the tower, whose forward tests/test_video_towers.py covers): steps,
  checkpoints and every evaluator's metrics. FrameMean embeds a video and its twin (the same
  frames reordered) bit for bit alike, so every twin comparison is a tie scored 1/2: exactly
  0.5, frames shuffled or not, after training as at init."""
  from vlx import main as vlx_main  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / "run"
  rc = vlx_main.main([f"--config={CONFIG}:frame_mean,smoke", f"--workdir={workdir}",
                      f"--config.data.source.data_dir={video_data_dir}",
                      "--config.model.video.depth=1", "--config.model.text.depth=1"])
  assert rc in (0, None)
  rows = read_metrics(workdir)
  train = [r for r in rows if "train/loss" in r]
  assert [r["step"] for r in train] == [2, 4], rows
  assert all(math.isfinite(r["train/clip/loss"]) for r in train), train
  assert checkpoint_steps(workdir) == [2, 4]
  final = {k: v for r in rows if r["step"] == 4 for k, v in r.items()}
  for name in ("retrieval/t2v_r1", "retrieval/v2t_median_rank", "retrieval/static/t2v_r1",
               "retrieval/temporal/v2t_mean_rank", "twins/direction/accuracy"):
    assert name in final, sorted(final)
  assert final["retrieval/num_videos"] == 64 and final["twins/num_pairs"] > 10
  assert 0 <= final["retrieval/t2v_r1"] <= final["retrieval/t2v_r5"] <= 1
  assert 1 <= final["retrieval/t2v_median_rank"] <= 64
  for name in ("twins", "twins_shuffled"):
    got = {k: v for k, v in final.items()
           if k.startswith(name + "/") and k.split("/")[-1] not in ("num_pairs", "seconds")}
    assert len(got) >= 5 and all(v == 0.5 for v in got.values()), got


def test_order_blind_scoring_is_exactly_half_on_any_captions():
  """Twins with one embedding between them (a fake time-blind tower), random captions."""
  rng = np.random.default_rng(1)
  video = np.repeat(rng.normal(size=(20, 6)), 2, axis=0)     # videos 2i and 2i+1 alike
  text = rng.normal(size=(40, 3, 6))
  pairs = video_evals.twin_pairs(range(40), [i ^ 1 for i in range(40)])
  assert len(pairs) == 20
  got = video_evals.twin_accuracy(video, text, pairs, ["order"] * 40)
  assert got["accuracy"] == got["v2t"] == got["t2v"] == got["order/accuracy"] == 0.5, got


def test_twin_pairs_and_an_oracle_scores_one():
  # Records 10..15: (10, 11) and (12, 13) are twins, 14 is static, 15's twin (16) was cut off.
  index, twin = [10, 11, 12, 13, 14, 15], [11, 10, 13, 12, -1, 16]
  pairs = video_evals.twin_pairs(index, twin)
  assert pairs == [(0, 1), (2, 3)]
  video = np.eye(6, 8)                                  # orthogonal unit embeddings
  text = np.repeat(video[:, None], 3, axis=1)           # 3 captions, each at its own video
  concepts = ["order", "order", "size", "size", "scene", "size"]
  got = video_evals.twin_accuracy(video, text, pairs, concepts)
  assert got == {"accuracy": 1.0, "v2t": 1.0, "t2v": 1.0, "num_pairs": 2,
                 "order/accuracy": 1.0, "size/accuracy": 1.0}
  # Swap the captions of one pair: that pair is always wrong.
  text[[0, 1]] = text[[1, 0]]
  got = video_evals.twin_accuracy(video, text, pairs, concepts)
  assert got["order/accuracy"] == 0.0 and got["size/accuracy"] == 1.0 and got["accuracy"] == 0.5


def test_ranks_on_a_hand_made_similarity_matrix():
  sims = np.array([[0.9, 0.1, 0.5, 0.2],    # correct item 0 first: rank 1
                   [0.3, 0.2, 0.8, 0.7],    # correct item 1 under 3 others: rank 4
                   [0.5, 0.5, 0.5, 0.1],    # correct item 2 tied with 2 others: rank 2 (1..3)
                   [0.4, 0.6, 0.6, 0.6]])   # correct items 2 and 3 (best 0.6), tied with 1
  positive = np.eye(4, dtype=bool)
  positive[3, 2] = True
  greater, ties = video_evals.rank_counts(sims, positive)
  np.testing.assert_array_equal(greater, [0, 3, 0, 0])
  np.testing.assert_array_equal(ties, [0, 0, 2, 1])
  got = video_evals.ranking_metrics(greater, ties, ks=(1, 2))
  # R@1: 1 + 0 + 1/3 + 1/2; R@2: 1 + 0 + 2/3 + 1; ranks: 1, 4, 2, 1.5.
  assert got["r1"] == pytest.approx((1 + 1 / 3 + 1 / 2) / 4)
  assert got["r2"] == pytest.approx((1 + 2 / 3 + 1) / 4)
  assert got["median_rank"] == pytest.approx(1.75)
  assert got["mean_rank"] == pytest.approx((1 + 4 + 2 + 1.5) / 4)


def test_retrieval_in_chunks_equals_one_block_and_finds_each_pair():
  rng = np.random.default_rng(0)
  unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
  video = unit(rng.normal(size=(7, 5)))
  text = unit(video[:, None] + 0.05 * rng.normal(size=(7, 2, 5)))  # 2 near captions per video
  noisy = unit(video[:, None] + rng.normal(size=(7, 2, 5)))    # ranks spread out
  whole = video_evals.retrieval_metrics(video, noisy, chunk=1024)
  assert 0 < whole["t2v_r1"] < 1 and whole["v2t_mean_rank"] > 1, whole
  assert video_evals.retrieval_metrics(video, noisy, chunk=3) == whole
  whole = video_evals.retrieval_metrics(video, text, chunk=3)
  for d in ("t2v", "v2t"):
    assert whole[f"{d}_r1"] == 1.0 and whole[f"{d}_median_rank"] == 1.0, whole
  reversed_text = text[::-1].copy()                          # every caption at another video
  assert video_evals.retrieval_metrics(video, reversed_text)["t2v_r1"] < 0.5


def test_matched_retrieval_credits_any_video_a_shared_caption_annotates():
  # Videos 0 and 1 both carry "a red circle" (a one-shape still scene): no text tells them
  # apart. Each caption embeds at video 0, so strict t2v misses video 1's copy; matched
  # counts it (video 0 carries that caption too). Video 2's caption is its own.
  video = np.eye(3)
  text = np.stack([np.eye(3)[[0]], np.eye(3)[[0]], np.eye(3)[[2]]])   # [3, 1, 3]
  captions = np.array([["a red circle"], ["a red circle"], ["a blue square"]], dtype=object)
  got = video_evals.retrieval_metrics(video, text, ks=(1,), captions=captions)
  assert got["t2v_r1"] == pytest.approx(2 / 3) and got["matched_t2v_r1"] == 1.0
  assert got["shared_captions"] == pytest.approx(2 / 3)
  # v2t: video 0 ties its own caption with video 1's identical one (strict: a half; matched:
  # both are its captions, 1); video 1 ties all three captions at 0 (strict 1/3, matched: two
  # of the three are its captions, 1/2).
  assert got["v2t_r1"] == pytest.approx((1 / 2 + 1 / 3 + 1) / 3)
  assert got["matched_v2t_r1"] == pytest.approx((1 + 1 / 2 + 1) / 3)
  unique = np.array([["a"], ["b"], ["c"]], dtype=object)
  plain = video_evals.retrieval_metrics(video, text, ks=(1,), captions=unique)
  assert plain["matched_t2v_r1"] == plain["t2v_r1"] and plain["shared_captions"] == 0.0


def test_variants_build_without_data_and_a_typo_is_one_line():
  config = config_lib.load_config_file(f"{CONFIG}:b16x2")
  assert build.dummy_batch(config)["video"].shape == (512, 16, 224, 224, 3)
  assert config.model.video.kind == "vivit" and config.model.video.tubelet == 2
  assert config_lib.load_config_file(f"{CONFIG}:frame_mean").model.video.kind == "frame_mean"
  # tiny: the factorised tower over single frames; `joint` keeps the tubelet tower VideoMAE
  # pretrains (experiments/videomae_transfer.py), at the same width.
  tiny, joint = (config_lib.load_config_file(f"{CONFIG}:{v}").model.video
                 for v in ("tiny", "tiny,joint"))
  assert (tiny.encoder, tiny.tubelet, tiny.depth, tiny.temporal_depth) == ("factorised", 1, 2, 2)
  assert (joint.encoder, joint.tubelet, joint.depth) == ("joint", 2, 4)
  assert joint.width == tiny.width
  for wrong in ("b16x2,joint", "tiny,frame_mean,joint"):
    with pytest.raises(ValueError, match="variant word 'joint'"):
      config_lib.load_config_file(f"{CONFIG}:{wrong}")
  with pytest.raises(ValueError, match="unknown variant word 'vivid'.*valid variant words"):
    config_lib.load_config_file(f"{CONFIG}:vivid")


def test_sharded_video_text_step_equals_the_single_device_step():
  """One train step of the ViViT video-text model (padded frames masked) on a 1-device mesh
  and on the 8-device data x fsdp x tensor = 2x2x2 mesh: same loss, gradients and params."""
  import jax  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from vlx.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  from vlx.train import trainer  # pylint: disable=g-import-not-at-top
  from vlx_testlib import assert_trees_close, mesh_of, one_train_step  # pylint: disable=g-import-not-at-top
  config = config_lib.load_config_file(f"{CONFIG}:tiny,smoke")
  config_lib.apply_overrides(config, [
      ("model.video.depth", "1"), ("model.video.width", "32"), ("model.video.num_heads", "2"),
      ("model.text.depth", "1"), ("model.text.width", "32"), ("model.text.num_heads", "2"),
      ("model.embed_dim", "16"), ("batch_size", "8"), ("data.max_len", "8"),
      ("model.text.max_len", "8"), ("model.text.vocab_size", "64"),
      # CLIP's logit scale, not the tiny recipe's 50: with sgd(1.0) the step is the gradient,
      # which grows with the scale, and so does its float32 reduction-order noise (one entry
      # of 256 moved 8e-5 apart at scale 50, against tolerances set for these sizes).
      ("model.temperature_init", str(1 / 0.07))])
  rng = np.random.default_rng(0)
  b, t, s = 8, config.data.num_frames, config.data.image_size
  frame_mask = np.arange(t)[None] < rng.integers(t // 2, t + 1, b)[:, None]
  text = rng.integers(3, 64, (b, 8)).astype(np.int32)
  text[:, 5] = 2  # EOS, then padding
  text[:, 6:] = 0
  batch = {"video": rng.uniform(-1, 1, (b, t, s, s, 3)).astype(np.float32), "text": text,
           "frame_mask": frame_mask}
  tx = optax.sgd(1.0)  # params - grads: compares the gradients themselves
  model = build.build_model(config)
  state, _ = trainer.create_state(config, model, tx, mesh_of(1, 1, 1, 1),
                                  mesh_lib.rules_from_config(config.sharding))
  state = jax.device_get(state)
  p1, m1 = one_train_step(config, model, state, mesh_of(1, 1, 1, 1), tx, batch)
  p8, m8 = one_train_step(config, model, state, mesh_of(2, 2, 2, 8), tx, batch)
  np.testing.assert_allclose(m8["train/loss"], m1["train/loss"], rtol=1e-5)
  np.testing.assert_allclose(m8["train/grad_norm"], m1["train/grad_norm"], rtol=1e-4)
  assert_trees_close(p1, p8, atol=2e-5, rtol=1e-4, what="after step")
  moved = max(float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(state.params),
                                                          jax.tree.leaves(p1)))
  assert moved > 1e-3
