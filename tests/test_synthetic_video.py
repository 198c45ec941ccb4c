"""Synthetic video-text data (vlx/data/video_render.py, synthetic_video.py, video_data.py).

The renderer is tested directly on a few dozen videos; the TFDS build (the `small` config,
320 videos) runs once per module, for the tests of what is stored and how it is read.
"""

from __future__ import annotations

import numpy as np
import pytest

from vlx.data import video_render as V
from vlx_testlib import shapes_data_dir, video_data_dir  # noqa: F401

T, S = V.NUM_FRAMES, V.IMAGE_SIZE
PER_CONCEPT = 6  # twin pairs per temporal concept


def _sorted_frames(frames):
  return sorted(f.tobytes() for f in frames)


def _shows(frames: np.ndarray, rgb: np.ndarray) -> np.ndarray:
  """[T] bool: which frames have pixels of exactly this object colour (drawn as uint8)."""
  close = np.all(np.abs(frames.astype(np.float32) - np.floor(rgb)) <= 1, axis=-1)
  return close.reshape(len(frames), -1).sum(axis=1) >= 1


@pytest.fixture(scope="module")
def pairs():
  rng = np.random.default_rng(7)
  return [V.temporal_pair(rng, concept=c) for c in V.TEMPORAL_CONCEPTS
          for _ in range(PER_CONCEPT)]


@pytest.fixture(scope="module")
def statics():
  rng = np.random.default_rng(8)
  return [V.static_video(rng) for _ in range(12)]


def test_twin_has_the_same_frames_in_another_order_and_other_text(pairs):
  for a, b in pairs:
    assert a.frames.shape == (T, S, S, 3) and a.frames.dtype == np.uint8
    assert _sorted_frames(a.frames) == _sorted_frames(b.frames), a.concept
    assert not np.array_equal(a.frames, b.frames), a.concept
    assert not set(a.captions) & set(b.captions), (a.captions, b.captions)
    # The same questions, the temporal one answered otherwise; the same choices, another answer.
    assert [q for q, _ in a.qa] == [q for q, _ in b.qa]
    assert a.qa[0][1] != b.qa[0][1], (a.qa, b.qa)
    assert a.mc_choices == b.mc_choices and a.mc_answer != b.mc_answer
    assert a.mc_choices[a.mc_answer] == a.captions[0]
    assert b.mc_choices[b.mc_answer] == b.captions[0]
    if a.concept != "order":
      assert a.label != b.label and min(a.label, b.label) >= 0
    assert a.span_query != b.span_query or a.span != b.span


def test_spans_lie_in_range_and_the_event_shows_only_inside(pairs):
  for video in (v for pair in pairs for v in pair):
    t0, t1 = video.span
    assert 0 <= t0 < t1 <= T and t1 - t0 < T, (video.concept, video.span)
    inside = (np.arange(T) >= t0) & (np.arange(T) < t1)
    shown = np.any([_shows(video.frames, rgb) for rgb in video.span_colours], axis=0)
    np.testing.assert_array_equal(shown, inside, err_msg=f"{video.concept} {video.facts}")


def test_static_videos_show_every_object_in_every_frame(statics):
  assert {len(v.facts["objects"]) for v in statics} == {1, 2, 3}
  for video in statics:
    assert video.kind == "static" and video.span == (0, T) and video.label == -1
    assert len(video.span_colours) == len(video.facts["objects"])
    for rgb in video.span_colours:
      assert _shows(video.frames, rgb).all(), video.captions[0]
    assert video.mc_choices[video.mc_answer] == video.captions[0]


def test_generation_is_deterministic_given_the_seed():
  def run(seed):
    return [(v.frames, v.captions, v.qa, v.mc_choices, v.span, twin)
            for v, twin in V.videos(12, seed)]
  first, again, other = run(3), run(3), run(4)
  for x, y in zip(first, again):
    np.testing.assert_array_equal(x[0], y[0])
    assert x[1:] == y[1:]
  assert any(not np.array_equal(x[0], y[0]) for x, y in zip(first, other))


def test_frame_size_and_count_are_configurable_within_bounds():
  (video, _), _ = V.videos(2, 0, image_size=64, num_frames=10)
  assert video.frames.shape == (10, 64, 64, 3)
  for size, frames in ((16, 8), (128, 8), (32, 4)):
    with pytest.raises(ValueError):
      list(V.videos(2, 0, image_size=size, num_frames=frames))
  with pytest.raises(ValueError, match="even"):
    list(V.videos(3, 0))


# ---- The built dataset -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def handle(video_data_dir):  # noqa: F811  (the run's shared small split)
  from vlx import registry  # pylint: disable=g-import-not-at-top
  return registry.DATASETS.get("synthetic_video")(data_dir=video_data_dir, variant="small")


def test_built_split_keeps_twins_in_aligned_units_and_matches_the_renderer(handle):
  train = handle.split("train")
  assert len(train) == 256 and len(handle.split("test")) == 64
  kinds = [train[i]["kind"] for i in range(len(train))]
  assert set(kinds) == {b"temporal", b"static"}
  for i in range(len(train)):
    twin = int(train[i]["twin"])
    if kinds[i] == b"static":
      assert twin == -1 and kinds[i ^ 1] == b"static"  # static videos come in units too
      continue
    assert twin == i ^ 1 and int(train[twin]["twin"]) == i  # units [2k, 2k + 1]
    assert _sorted_frames(train[i]["video"]) == _sorted_frames(train[twin]["video"])
    assert not set(train[i]["captions"]) & set(train[twin]["captions"])
  # Stored in generation order: record i is the renderer's video i (seed 0 for train).
  for i, (video, twin) in zip(range(4), V.videos(len(train), 0)):
    np.testing.assert_array_equal(train[i]["video"], video.frames)
    assert int(train[i]["twin"]) == twin


def test_a_batch_of_videos_comes_out_of_the_pipeline(handle):
  from vlx.data import pipeline  # pylint: disable=g-import-not-at-top
  pp = ("decode_video|video_value_range(-1,1)|sample_caption|tokenize(16)|video_qa(12)"
        "|video_choice(16)|video_span(12)")
  keys = ("video", "text", "question", "answer", "choices", "choice_target", "span",
          "span_mask")
  batch = next(pipeline.TrainIterator(handle, "train", pp, 4, seed=0, num_threads=1,
                                      keys=keys))
  assert batch["video"].shape == (4, T, S, S, 3) and batch["video"].dtype == np.float32
  assert -1 <= batch["video"].min() < batch["video"].max() <= 1
  assert batch["text"].shape == (4, 16) and batch["question"].shape == (4, 12)
  assert batch["choices"].shape == (4, V.NUM_CHOICES, 16)
  assert np.all((0 <= batch["answer"]) & (batch["answer"] < len(handle.answer_vocab)))
  span = batch["span"]
  np.testing.assert_array_equal(batch["span_mask"].sum(1), span[:, 1] - span[:, 0])
  # Every text field tokenizes into known pieces (the tokenizer was trained on all of them).
  text = handle.tokenizer.decode(batch["question"])[0]
  assert text and "⁇" not in text


def _column_row(region: str):
  """(column, row) of thirds named by a region word ('top left', 'right', 'center')."""
  words = region.split()
  return ((0 if "left" in words else 2 if "right" in words else 1),
          (0 if "top" in words else 2 if "bottom" in words else 1))


def test_frame_captions_name_what_each_frame_shows_and_where(pairs, statics):
  """A caption per frame: the named shapes that frame shows, each in the region (thirds) its
  pixels lie in, 'an empty frame' without one; a twin's frame captions follow its frames."""
  for a, b in pairs:
    caption_of = {f.tobytes(): c for f, c in zip(a.frames, a.frame_captions)}
    assert [caption_of[f.tobytes()] for f in b.frames] == b.frame_captions
    if a.concept not in ("direction", "size"):  # one named shape, always whole in view
      continue
    f = a.facts
    name = f"{f['colour']} {f['shape']}"
    for frame, caption, shown in zip(a.frames, a.frame_captions,
                                     _shows(a.frames, a.span_colours[0])):
      if not shown:
        assert caption == "an empty frame", caption
        continue
      assert caption.startswith(("a ", "an ")) and f" {name} in the " in caption, caption
      close = np.all(np.abs(frame.astype(np.float32) - np.floor(a.span_colours[0])) <= 1, -1)
      ys, xs = np.nonzero(close)
      col, row = _column_row(caption.split(" in the ")[1])
      for centre, cell in ((xs.mean() + 0.5, col), (ys.mean() + 0.5, row)):
        # The pixel centroid is the shape's centre to within 2 px (a triangle's is off it).
        assert cell * S / 3 - 2 <= centre <= (cell + 1) * S / 3 + 2, (caption, centre)
  for video in statics:
    names = [f"{c} {s}" for c, s in video.facts["objects"]]
    for caption in video.frame_captions:
      assert [n for n in names if f" {n} in the " in caption] == names, caption


def test_still_caption_gives_a_still_frame_its_own_caption(handle):
  """`video_frame` then `still_caption(1.0)`: the caption is the chosen frame's own."""
  from vlx import registry  # pylint: disable=g-import-not-at-top
  ops = [registry.PP_OPS.get(name)(handle, *args) for name, args in (
      ("decode_video", ()), ("video_frame", ("random",)), ("sample_caption", ()),
      ("still_caption", (1.0,)))]
  rng = np.random.default_rng(0)
  record = handle.split("train")[0]
  seen = set()
  for _ in range(20):
    ex = dict(record)
    for op in ops:
      ex = op(ex, rng)
    t = ex["frame_index"]
    np.testing.assert_array_equal(ex["image"], record["video"][t])
    assert ex["caption"] == record["frame_captions"][t].decode()
    seen.add(t)
  assert len(seen) > 1
  ex = dict(record)
  for op in ops[:3] + [registry.PP_OPS.get("still_caption")(handle, 0.0)]:
    ex = op(ex, rng)
  assert ex["caption"] in [c.decode() for c in record["captions"]]
