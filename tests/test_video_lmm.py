"""The video-language model of the post-training family: its text blocks score only the
response, the prefix-LM reads a video frame by frame in time order (and more frames than it
was built with), and the evaluator's verification of program-written responses is perfect."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vlx import build, config_lib, registry
from vlx.families.video_lmm import evals as E
from vlx.families.video_lmm import reasoning_data as RD
from vlx.families.video_lmm import tasks as T
from vlx.token_ids import EOS_ID
from vlx_testlib import REPO


@pytest.fixture(scope="module")
def rv_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("rv"))


@pytest.fixture(scope="module")
def handle(rv_dir):
  return RD.reasoning_video(data_dir=rv_dir, variant="small")


def _record(handle, i, split="cot"):
  r = dict(handle.split(split)[i])
  return {k: (v if k in ("video", "span", "options") else v.decode() if isinstance(v, bytes)
              else v) for k, v in r.items()}


@pytest.mark.parametrize("response", T.RESPONSES)
def test_text_block_scores_exactly_the_response(handle, response):
  op = registry.PP_OPS.get("reasoning_qa")(handle, 16, 36, response, 256)
  for i in range(8):
    ex = op(_record(handle, i), np.random.default_rng(0))
    scored = ex["targets"][ex["loss_mask"] > 0]
    assert scored[-1] == EOS_ID
    text = handle.tokenizer.decode(scored[None, :-1])[0]
    assert text.replace(" ", "") == T.response_text(_record(handle, i), response).replace(" ", "")
    prompt_text = handle.tokenizer.decode(np.where(ex["prompt"] < 256, ex["prompt"], 0)[None])[0]
    if response == "caption":
      assert prompt_text == ""
    else:
      assert prompt_text.strip() == _record(handle, i)["question"]
    assert ex["video"].shape == (8, 32, 32, 3)
  with pytest.raises(ValueError, match="unknown response format 'cots'"):
    registry.PP_OPS.get("reasoning_qa")(handle, 16, 36, "cots", 256)


def test_splits_read_at_other_frame_counts(handle):
  """`<split>_<R>f`: the split's questions, each clip read at R frames, made on first use."""
  for name, frames in (("test_16f", 16), ("cot_4f", 4)):
    split, base = handle.split(name), handle.split(name.split("_")[0])
    assert len(split) == len(base)
    for i in (0, 5):
      assert split[i]["video"].shape == (frames, 32, 32, 3)
      for key in ("question", "answer", "thought"):
        assert split[i][key] == base[i][key]
      np.testing.assert_array_equal(split[i]["span"], base[i]["span"])
  assert handle.split("test_8f") is handle.split("test")  # the clip's own count: the split
  assert handle.splits.get("cot_4f") is handle.split("cot_4f")
  for name in ("test_0f", "val_16f", "test_16f\n"):
    with pytest.raises(KeyError, match=r"unknown split.*and <split>_<R>f .*data.num_frames=R"):
      handle.split(name)


def test_training_on_a_split_read_at_other_frames_needs_num_frames(handle, rv_dir):
  """`data.train_split=cot_16f` with the config's 8 frames is refused in one line naming
  data.num_frames and the clips' shape (it once failed at the first step in JAX's shape
  check); with data.num_frames=16 it passes."""
  from vlx import config_checks  # pylint: disable=g-import-not-at-top
  config = config_lib.load_config_file(str(REPO / "configs" / "video_lmm.py:tiny,smoke"))
  assert config.data.source.variant == "small" and len(handle.split("cot_16f"))
  config_lib.apply_overrides(config, [("data.source.data_dir", rv_dir),
                                      ("data.train_split", "cot_16f")])
  with pytest.raises(config_lib.ConfigError,
                     match=r"data.num_frames=8 .* split 'cot_16f' makes video of shape "
                           r"\(16, 32, 32, 3\)"):
    config_checks.check_data(config)
  config_lib.apply_overrides(config, [("data.num_frames", "16")])
  config_checks.check_data(config)


def test_config_lengths_cover_the_data(handle):
  from configs import video_lmm  # pylint: disable=g-import-not-at-top
  for split in ("cot", "train", "test"):
    p, t = T.lengths(handle, split)
    assert p <= video_lmm.PROMPT_LEN and t + 1 <= video_lmm.TARGET_LEN, (split, p, t)


def test_prefix_lm_reads_a_video_in_time_order_and_more_frames():
  config = config_lib.load_config_file(str(REPO / "configs" / "video_lmm.py:tiny"))
  model = build.build_model(config)
  rng = np.random.default_rng(0)
  video = jnp.asarray(rng.uniform(-1, 1, (2, 8, 32, 32, 3)), jnp.float32)
  params = model.init(jax.random.key(0), video[:, 0], method="image_embeds")
  embed = jax.jit(lambda v: model.apply(params, v, method="image_embeds"))
  tokens = embed(video)
  assert tokens.shape == (2, 8 * 16, config.model.decoder.width)
  # frame t's tokens are the image tokens of frame t plus frame t's time code
  single = embed(video[:, 3])
  delta = tokens[:, 3 * 16:4 * 16] - single
  assert float(jnp.abs(delta - delta[:, :1]).max()) < 1e-5
  # the order of the frames reaches the decoder: reversing them changes the tokens
  reversed_tokens = embed(video[:, ::-1])
  assert float(jnp.abs(reversed_tokens[:, :16] - tokens[:, -16:]).max()) > 1e-2
  # more frames at test time than in training: no parameter depends on the frame count
  assert embed(jnp.concatenate([video, video[:, :4]], 1)).shape[1] == 12 * 16


def test_frames_are_marked_by_their_time_in_the_clip():
  """`clip_frames=8`: at 8 frames the marks are the frame indices (a model trained before
  time marks reads the same tokens); at 16 frames (each frame twice) frame j is marked at
  (j + 0.5) / 2 - 0.5, between the trained marks, not at 8..15 as by index."""
  from vlx.families.unified.model import frame_times  # pylint: disable=g-import-not-at-top
  from vlx.models.video import sincos_1d  # pylint: disable=g-import-not-at-top
  np.testing.assert_array_equal(frame_times(8, 8), np.arange(8))
  np.testing.assert_array_equal(frame_times(4, 8), [0.5, 2.5, 4.5, 6.5])
  np.testing.assert_allclose(frame_times(16, 8), (np.arange(16) + 0.5) / 2 - 0.5)
  np.testing.assert_array_equal(frame_times(12, 0), np.arange(12))
  config = config_lib.load_config_file(str(REPO / "configs" / "video_lmm.py:tiny"))
  assert config.model.clip_frames == config.data.num_frames == 8
  timed = build.build_model(config)
  config.model.clip_frames = 0
  indexed = build.build_model(config)
  video = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (1, 8, 32, 32, 3)), jnp.float32)
  params = timed.init(jax.random.key(0), video[:, 0], method="image_embeds")
  def embed(m, v):
    return m.apply(params, v, method="image_embeds")
  np.testing.assert_array_equal(embed(timed, video), embed(indexed, video))
  twice = jnp.repeat(video, 2, axis=1)
  tokens = embed(timed, twice).reshape(1, 16, 16, -1)
  single = embed(timed, video[:, 0])
  width = tokens.shape[-1]
  for j in (0, 1, 9, 15):
    mark = tokens[0, j] - single[0] if j < 2 else tokens[0, j] - embed(timed, video[:, j // 2])[0]
    want = sincos_1d(16, width, frame_times(16, 8))[0, j]
    np.testing.assert_allclose(np.asarray(mark[0]), want, atol=1e-5)
  by_index = embed(indexed, twice).reshape(1, 16, 16, -1)
  assert float(jnp.abs(by_index[0, 15] - tokens[0, 15]).max()) > 0.1


def test_evaluator_scoring_of_program_responses(handle):
  rows = [_record(handle, i, "test") for i in range(16)]
  truth = {k: np.array([r[k] for r in rows], dtype=object) for k in E._TRUTH}
  examples = E.examples_of(truth, 8)
  right = E.score_responses([T.response_text(r, "cot") for r in rows], examples)
  assert right["accuracy"] == 1.0 and right["format_rate"] == 1.0
  assert right["span_miou"] == 1.0
  assert {f"accuracy_{k}" for k in ("count", "order", "direction", "span")} <= set(right)
  answer_only = E.score_responses([T.response_text(r, "answer") for r in rows], examples)
  assert answer_only["accuracy"] == 1.0 and answer_only["format_rate"] == 0.0
  wrong = E.score_responses(["<think>x</think><answer>nothing</answer>"] * 16, examples)
  assert wrong["accuracy"] == 0.0 and wrong["format_rate"] == 1.0


def test_frame_baselines_blank_and_shuffle_each_question_the_same_way():
  ev = object.__new__(E.ReasoningQA)
  video = np.random.default_rng(0).uniform(-1, 1, (5, 8, 4, 4, 3)).astype(np.float32)
  ev.seed, ev.frames = 0, "ordered"
  assert ev._video(video, 0) is video
  ev.frames = "blank"
  assert np.all(ev._video(video, 0) == -1.0)
  ev.frames = "shuffled"
  a, b = ev._video(video, 10), ev._video(video, 10)
  np.testing.assert_array_equal(a, b)  # the same order for the same question, every sample
  for i in range(5):  # each video's own frames, in another order
    perm = [int(np.argmax([np.array_equal(a[i, t], video[i, u]) for u in range(8)]))
            for t in range(8)]
    assert sorted(perm) == list(range(8))
  assert any(not np.array_equal(a[i], video[i]) for i in range(5))
