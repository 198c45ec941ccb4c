"""Input pipeline: corrupt records skipped and counted, resumable iterator state, pp parsing,
tokenizer layout, caption duplicates, and the generic 'tfds' source."""

import json
import os
import subprocess

import numpy as np
import pytest
import tensorflow_datasets as tfds

from vlx.data import pipeline, pp_ops, sources
from vlx.data.tokenizer import EOS_ID, PAD_ID
from vlx.evals import retrieval
from vlx_testlib import PYTHON, REPO, shapes_data_dir, shapes_handle, subprocess_env  # noqa: F401

PP = "decode|value_range(-1,1)|sample_caption|tokenize(16)"


def _record(i, size=16):
  rng = np.random.default_rng(i)
  return {"image": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
          "captions": np.array([f"a red circle number {i}", f"a blue square {i}"], dtype=object),
          "label": i % 4}


BAD = [
    {"image": np.zeros((16, 16, 4), np.uint8), "captions": np.array(["a red circle"], object),
     "label": 0},                                                        # wrong image shape
    {"image": b"\x89PNG this is not an image", "captions": np.array(["a cross"], object),
     "label": 0},                                                        # undecodable bytes
    {"image": np.zeros((16, 16, 3), np.uint8), "captions": np.array(["", "  "], object),
     "label": 0},                                                        # empty captions
]


def _handle(tokenizer, records):
  return sources.DatasetHandle(splits={"train": records, "test": records}, tokenizer=tokenizer)


def _mixed(num_good=8):
  good = [_record(i) for i in range(num_good)]
  # Corrupt records interleaved with the good ones.
  return good[:2] + BAD[:1] + good[2:5] + BAD[1:2] + good[5:] + BAD[2:]


@pytest.mark.parametrize("bad", range(len(BAD)))
def test_each_kind_of_corruption_raises_corrupt_record(shapes_handle, bad):
  fn = pp_ops.parse(PP, _handle(shapes_handle.tokenizer, []))
  with pytest.raises(pp_ops.CorruptRecord):
    fn(dict(BAD[bad]), np.random.default_rng(0))
  ex = fn(_record(0), np.random.default_rng(0))
  assert ex["image"].shape == (16, 16, 3) and ex["text"].shape == (16,)


def test_train_iterator_skips_and_counts_corrupt_records(shapes_handle):
  records = _mixed()
  good_images = {_record(i)["image"].tobytes() for i in range(8)}
  it = pipeline.TrainIterator(_handle(shapes_handle.tokenizer, records), "train", PP, 4, seed=0,
                              num_threads=1, prefetch=1)
  # 3 batches = 12 good records: the whole first epoch (with its 3 corrupt records) is read.
  for _ in range(3):
    batch = next(it)
    assert batch["image"].shape == (4, 16, 16, 3) and batch["text"].shape == (4, 16)
    assert batch["image"].dtype == np.float32
    for img in batch["image"]:
      raw = np.round((img + 1) / 2 * 255).astype(np.uint8).tobytes()
      assert raw in good_images, "a corrupt record reached a batch"
  assert it.counter.count >= 3, it.counter.count
  assert it.get_state()["skipped"] == it.counter.count
  # Every epoch holds exactly 3 corrupt records; with prefetch, at most a couple of epochs ahead.
  assert it.counter.count <= 3 * 4, it.counter.count


def test_load_eval_arrays_skips_and_counts_corrupt_records(shapes_handle):
  records = _mixed()
  out = pipeline.load_eval_arrays(_handle(shapes_handle.tokenizer, records), "test",
                                  "decode|value_range(-1,1)", 16)
  assert out["skipped"] == 3
  assert out["image"].shape == (8, 16, 16, 3)
  assert out["text"].shape == (8, 2, 16)
  assert list(out["label"]) == [i % 4 for i in range(8)]
  assert out["caption_strings"][0, 0] == "a red circle number 0"


def test_iterator_state_round_trip(shapes_handle):
  kw = dict(local_batch_size=8, seed=3, num_threads=2, prefetch=2)
  a = pipeline.TrainIterator(shapes_handle, "train", PP, **kw)
  for _ in range(3):
    next(a)
  # The state goes through JSON, as in the checkpoint.
  state = json.loads(json.dumps(a.get_state()))
  expected = [next(a) for _ in range(3)]

  b = pipeline.TrainIterator(shapes_handle, "train", PP, **kw)
  first_b = next(b)
  assert not np.array_equal(first_b["image"], expected[0]["image"])
  b.set_state(state)
  got = [next(b) for _ in range(3)]
  for e, g in zip(expected, got):
    np.testing.assert_array_equal(g["image"], e["image"])
    np.testing.assert_array_equal(g["text"], e["text"])

  # A state saved with another batch layout (rows per process) cannot resume this order.
  other = pipeline.TrainIterator(shapes_handle, "train", PP, **{**kw, "local_batch_size": 4},
                                 global_batch_size=8, rows=[4, 5, 6, 7])
  with pytest.raises(ValueError, match="cannot resume the same data order"):
    other.set_state(state)

  # A different seed gives a different order (the comparison above is not vacuous).
  c = pipeline.TrainIterator(shapes_handle, "train", PP, **{**kw, "seed": 4})
  assert not np.array_equal(next(c)["image"], next(pipeline.TrainIterator(
      shapes_handle, "train", PP, **kw))["image"])


class _CountingRecords(list):
  """A list of records that remembers which indices were read."""

  def __init__(self, records):
    super().__init__(records)
    self.read = set()

  def __getitem__(self, i):
    self.read.add(int(i))
    return super().__getitem__(i)


def test_data_order_does_not_depend_on_the_process_count(shapes_handle):
  """Processes that each take their rows of every global batch reassemble exactly the global
  batches of one process, read only their own records, and resume from their own states."""
  data = [_record(i) for i in range(256)]
  g = 8  # global batch

  def iterator(rows, records=None):
    # Each "process" has its own record list, so read-ahead threads of another iterator
    # cannot be mistaken for its reads.
    handle = _handle(shapes_handle.tokenizer, records if records is not None else data)
    return pipeline.TrainIterator(handle, "train", PP, len(rows), seed=5, num_threads=1,
                                  prefetch=1, global_batch_size=g, rows=rows)

  one = iterator(range(g))
  whole = [next(one) for _ in range(3)]
  # Contiguous rows (what make_array_from_process_local_data gives each process on a mesh
  # over jax.devices()) and strided rows (any other device order) alike.
  for layout in ([range(0, 4), range(4, 8)], [range(0, 2), range(2, 4), range(4, 6), range(6, 8)],
                 [range(0, 8, 2), range(1, 8, 2)]):
    reads = []
    parts = []
    for rows in layout:
      records = _CountingRecords(data)
      it = iterator(rows, records)
      parts.append([next(it) for _ in range(3)])
      reads.append(records.read)
      rows = np.asarray(rows)
      for step in range(3):
        for k in ("image", "text"):
          np.testing.assert_array_equal(parts[-1][step][k], whole[step][k][rows])
    # 3 batches of 8 (plus read-ahead) stay inside the first epoch of 256 records: the
    # record sets the processes read are disjoint.
    for a in range(len(reads)):
      for b in range(a + 1, len(reads)):
        assert not reads[a] & reads[b], (layout, reads[a] & reads[b])

  # Resuming one process's iterator from its (JSON) state continues its rows.
  a = iterator(range(4, 8))
  next(a)
  state = json.loads(json.dumps(a.get_state()))
  expected = [next(a) for _ in range(2)]
  b = iterator(range(4, 8))
  b.set_state(state)
  for e, got in zip(expected, [next(b) for _ in range(2)]):
    np.testing.assert_array_equal(got["image"], e["image"])

  with pytest.raises(ValueError, match="rows must lie in"):
    iterator(range(6, 10))


def test_process_batch_rows_are_what_make_array_from_process_local_data_expects():
  import jax  # pylint: disable=g-import-not-at-top
  from vlx.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  n = jax.device_count()
  for shape in (dict(data=-1), dict(data=1, fsdp=-1), dict(data=-1, tensor=2)):
    mesh = mesh_lib.make_mesh(ml_collections.ConfigDict(shape))
    rows = mesh_lib.process_batch_rows(mesh, 2 * n)
    # One process holds every row, in order.
    np.testing.assert_array_equal(rows, np.arange(2 * n))
    local = np.arange(2 * n, dtype=np.int32)[rows]
    arr = mesh_lib.global_batch({"x": local}, mesh)["x"]
    np.testing.assert_array_equal(np.asarray(arr), np.arange(2 * n))


@pytest.mark.parametrize("pp,exc,needle", [
    ("decode|value_range(-1,", ValueError, "value_range(-1,"),
    ("decode|1abc", ValueError, "cannot parse preprocessing op '1abc'"),
    ("decode|tokenize(foo)", ValueError, "bad arguments in preprocessing op 'tokenize(foo)'"),
    ("decod|value_range(-1,1)", KeyError, "unknown preprocessing op 'decod'"),
])
def test_pp_parse_errors_are_clear(shapes_handle, pp, exc, needle):
  with pytest.raises(exc) as e:
    pp_ops.parse(pp, shapes_handle)
  assert needle in str(e.value), str(e.value)


def test_pp_unknown_op_suggests_close_name(shapes_handle):
  with pytest.raises(KeyError, match="did you mean decode"):
    pp_ops.parse("decod", shapes_handle)


def test_tokenizer_pads_with_0_and_ends_with_eos(shapes_handle):
  tok = shapes_handle.tokenizer
  assert (PAD_ID, EOS_ID) == (0, 2)
  ids = tok.encode(["a large red circle in the center", ""], 16)
  assert ids.shape == (2, 16) and ids.dtype == np.int32
  row = ids[0]
  n = int(np.count_nonzero(row))
  assert 1 < n < 16
  assert row[n - 1] == EOS_ID and np.all(row[n:] == PAD_ID)
  assert np.all(row[:n - 1] != EOS_ID) and np.all(row[:n - 1] != PAD_ID)
  assert list(ids[1]) == [EOS_ID] + [PAD_ID] * 15
  # Truncation keeps the EOS as the last token.
  long = tok.encode([" ".join(["a small blue square"] * 20)], 8)[0]
  assert long[-1] == EOS_ID and np.all(long[:-1] != PAD_ID)
  assert tok.decode(ids[:1]) == ["a large red circle in the center"]


def test_caption_duplicates_are_rare_in_the_test_split(shapes_handle):
  data = pipeline.load_eval_arrays(shapes_handle, "test", "decode|value_range(-1,1)", 32)
  assert data["caption_strings"].shape == (256, 5)
  assert data["skipped"] == 0
  frac = retrieval.duplicate_fraction(data["caption_strings"])
  assert frac <= 0.05, frac


def test_duplicate_fraction_on_hand_made_captions():
  caps = np.array([["a", "b"], ["a", "c"], ["d", "e"]], dtype=object)
  assert retrieval.duplicate_fraction(caps) == pytest.approx(2 / 6)
  # The same caption twice for one image is not a cross-image duplicate.
  assert retrieval.duplicate_fraction(np.array([["a", "a"], ["b", "c"]], object)) == 0.0


# ---- The generic 'tfds' source ------------------------------------------------------------
#
# `tfds.testing.mock_data` cannot stand in for coco_captions here: constructing the
# coco_captions builder imports TensorFlow, which vlx does not depend on. This builder
# mimics coco_captions' layout (variable-size images, nested `captions/text` with a
# variable number of captions per image) with Tensor features only, prepared as ArrayRecord.


class VlxFakeCocoCaptions(tfds.core.GeneratorBasedBuilder):
  """coco_captions-shaped records without TensorFlow."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "image": tfds.features.Tensor(shape=(None, None, 3), dtype=np.uint8, encoding="zlib"),
        "image/id": tfds.features.Tensor(shape=(), dtype=np.int64),
        "captions": tfds.features.FeaturesDict({
            "id": tfds.features.Tensor(shape=(None,), dtype=np.int64),
            "text": tfds.features.Tensor(shape=(None,), dtype=np.object_),
        }),
    }))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples(24, 0), "val": self._generate_examples(6, 1)}

  def _generate_examples(self, num, seed):
    rng = np.random.default_rng(seed)
    words = ("red", "green", "blue", "circle", "square", "on", "a", "table", "dog", "cat")
    for i in range(num):
      k = 5 + i % 2  # coco has 5 to 7 captions per image
      caps = [" ".join(rng.choice(words, 6)) + f" {i} {j}" for j in range(k)]
      yield i, {"image": rng.integers(0, 256, (30 + i, 40, 3), dtype=np.uint8), "image/id": i,
                "captions": {"id": np.arange(k), "text": np.array(caps, dtype=object)}}


def test_tfds_source_reads_coco_captions_layout(tmp_path):
  data_dir = str(tmp_path / "tfds")
  VlxFakeCocoCaptions(data_dir=data_dir, file_format="array_record").download_and_prepare()
  import ml_collections  # pylint: disable=g-import-not-at-top
  data_config = ml_collections.ConfigDict(dict(name="tfds", source=dict(
      tfds_name="vlx_fake_coco_captions", data_dir=data_dir, vocab_size=64)))
  handle = sources.load_dataset(data_config)
  assert handle.captions_key == "captions/text" and handle.label_key is None
  assert len(handle.split("train")) == 24 and len(handle.split("val")) == 6
  assert handle.tokenizer.vocab_size >= 16

  pp = "decode|resize(32)|value_range(-1,1)|sample_caption|tokenize(16)"
  it = pipeline.TrainIterator(handle, "train", pp, 4, seed=0, num_threads=1, prefetch=1)
  batch = next(it)
  assert batch["image"].shape == (4, 32, 32, 3) and batch["text"].shape == (4, 16)
  assert batch["image"].min() >= -1 and batch["image"].max() <= 1
  assert np.all(batch["text"][:, 0] != PAD_ID) and np.all((batch["text"] == EOS_ID).sum(1) == 1)
  assert it.counter.count == 0

  ev = pipeline.load_eval_arrays(handle, "val", "decode|resize(32)|value_range(-1,1)", 16)
  assert ev["skipped"] == 0 and ev["image"].shape == (6, 32, 32, 3)
  # Every image keeps the smallest caption count (5), all tokenized.
  assert ev["text"].shape == (6, 5, 16) and isinstance(ev["caption_strings"][0, 0], str)


def test_second_process_waiting_on_the_lock_gets_the_dataset(tmp_path):
  """Deterministic form of two processes using the dataset for the first time at once: we
  hold the library's lock and generate the data while a subprocess waits for it."""
  import time  # pylint: disable=g-import-not-at-top
  import fcntl  # pylint: disable=g-import-not-at-top
  from vlx.data import synthetic_shapes  # pylint: disable=g-import-not-at-top
  data_dir = tmp_path / "tfds"
  data_dir.mkdir()
  code = ("import sys; from vlx.data import sources; "
          "h = sources.synthetic_shapes(data_dir=sys.argv[1], variant='small'); "
          "print(len(h.split('train')))")
  with open(data_dir / ".synthetic_shapes_small.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    proc = subprocess.Popen([PYTHON, "-c", code, str(data_dir)], cwd=REPO, env=subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
      # Wait until the subprocess blocks on our lock (a '->' waiter line in /proc/locks).
      deadline = time.time() + 120
      while not any("->" in line and f" {proc.pid} " in line
                    for line in open("/proc/locks")):
        assert proc.poll() is None, proc.communicate()[1][-1500:]
        assert time.time() < deadline, "subprocess never waited on the dataset lock"
        time.sleep(0.05)
      synthetic_shapes.SyntheticShapes(config="small", data_dir=str(data_dir),
                                       file_format="array_record").download_and_prepare()
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-1500:]
  assert out.strip() == "2048"


# ---- Aspect-preserving image ops ----------------------------------------------------------


def _circle_image(h, w, radius):
  """White image with a black disc in the middle."""
  yy, xx = np.mgrid[:h, :w]
  disc = (yy - h / 2 + 0.5) ** 2 + (xx - w / 2 + 0.5) ** 2 <= radius ** 2
  return np.where(disc[..., None], 0, 255).astype(np.uint8).repeat(3, -1)


def _disc_extent(image):
  """(height, width) of the dark pixels' bounding box."""
  dark = np.asarray(image)[..., 0] < 128
  rows, cols = np.flatnonzero(dark.any(1)), np.flatnonzero(dark.any(0))
  return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


@pytest.mark.parametrize("h,w", [(60, 120), (120, 60), (90, 64)])
def test_resize_small_and_central_crop_keep_a_circle_round(h, w):
  record = {"image": _circle_image(h, w, 24), "captions": np.array(["a circle"], object)}
  handle = sources.DatasetHandle(splits={}, tokenizer=None)
  ex = pp_ops.parse("decode|resize_small(32)|central_crop(32)", handle)(
      dict(record), np.random.default_rng(0))
  assert ex["image"].shape == (32, 32, 3) and ex["image"].dtype == np.uint8
  dh, dw = _disc_extent(ex["image"])
  assert abs(dh - dw) <= 1, (dh, dw)
  # The shorter side was scaled to 32: the disc's diameter scales with it.
  assert abs(dh - 48 * 32 / min(h, w)) <= 2, dh
  # What `resize` did: squash the disc into an ellipse.
  squashed = pp_ops.parse("decode|resize(32)", handle)(dict(record), np.random.default_rng(0))
  sh, sw = _disc_extent(squashed["image"])
  assert abs(sh - sw) > 4, (sh, sw)


def test_random_resized_crop_boxes_respect_scale_and_ratio():
  from vlx.data import image_ops  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  for h, w in [(60, 120), (120, 60), (50, 50)]:
    for _ in range(200):
      top, left, ch, cw = image_ops.inception_crop_box(h, w, rng, (0.2, 1.0), (3 / 4, 4 / 3))
      assert 0 <= top and top + ch <= h and 0 <= left and left + cw <= w
      assert 0.2 * h * w * 0.85 <= ch * cw <= h * w
      assert 3 / 4 - 0.1 <= cw / ch <= 4 / 3 + 0.1, (h, w, ch, cw)
  # Nothing fits (a thin strip, a square crop wanted): the largest centred crop in `ratio`.
  assert image_ops.inception_crop_box(10, 100, rng, (1.0, 1.0), (1.0, 1.0)) == (0, 45, 10, 10)


def test_random_resized_crop_is_seeded_sized_and_keeps_shapes_round():
  handle = sources.DatasetHandle(splits={}, tokenizer=None)
  record = {"image": _circle_image(80, 160, 30), "captions": np.array(["a circle"], object)}
  crop = pp_ops.parse("decode|random_resized_crop(32)", handle)
  a = crop(dict(record), np.random.default_rng(1))["image"]
  assert a.shape == (32, 32, 3) and a.dtype == np.uint8
  np.testing.assert_array_equal(a, crop(dict(record), np.random.default_rng(1))["image"])
  assert any(not np.array_equal(a, crop(dict(record), np.random.default_rng(s))["image"])
             for s in range(2, 6))
  # Square crops of the whole height (ratio 1, the largest area that fits): the disc stays round.
  square = pp_ops.parse("decode|random_resized_crop(32, (0.5, 0.5), (1.0, 1.0))", handle)
  for seed in range(5):
    img = square(dict(record), np.random.default_rng(seed))["image"]
    if (img[..., 0] < 128).any() and not ((img[0] < 128).any() or (img[-1] < 128).any()
                                         or (img[:, 0] < 128).any() or (img[:, -1] < 128).any()):
      dh, dw = _disc_extent(img)
      assert abs(dh - dw) <= 1, (seed, dh, dw)
  with pytest.raises(ValueError, match="random_resized_crop"):
    pp_ops.parse("random_resized_crop(32, (0.5, 2.0))", handle)


# ---- The tokenizer learns the text that the config's tasks read ---------------------------


def test_tokenizer_covers_every_question_and_expression_word(shapes_data_dir):
  """A config whose pp ops ask questions and referring expressions gets a tokenizer trained on
  them: no word of theirs is UNK. A captions-only config keeps the captions-only tokenizer."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from vlx.data import scene_qa  # pylint: disable=g-import-not-at-top
  from vlx.data.tokenizer import UNK_ID  # pylint: disable=g-import-not-at-top
  from vlx import config_lib  # pylint: disable=g-import-not-at-top
  data = config_lib.load_config_file(f"{REPO}/configs/albef.py:tiny,smoke").data
  data.source.data_dir = shapes_data_dir
  handle = sources.load_dataset(data)
  tok = handle.tokenizer
  texts = ["object", "what shape is the small red object"]
  # What the pp ops ask about the test scenes (every question type, several draws each).
  pps = [pp_ops.parse(f"decode|scene_vqa(18, {t!r})|scene_refer(12)", handle)
         for t in scene_qa.QUESTION_TYPES]
  rng = np.random.default_rng(0)
  test = handle.split("test")
  for i in range(len(test)):
    for pp in pps:
      ex = pp(test[i], rng)
      texts += [ex["question_string"].rstrip("?"), ex["expression_string"]]
  words = sorted({w for t in texts for w in t.split()})
  ids = tok.encode(words, 8)
  unk = [w for w, row in zip(words, ids) if UNK_ID in row]
  assert not unk, unk
  assert "questions" in tok.path and "expressions" in tok.path, tok.path  # its own cache file
  # Captions only (the dual encoders): the same file and tokenizer as before.
  caps = ml_collections.ConfigDict(dict(name="synthetic_shapes", source=dict(
      data_dir=shapes_data_dir, variant="small"), pp_train=PP, pp_eval="decode"))
  assert os.path.basename(sources.load_dataset(caps).tokenizer.path) == "spm_bpe_256.model"


def test_ids_past_the_tokenizer_vocabulary_decode_as_unk(shapes_handle):
  """A text tower's vocabulary can exceed a small dataset's tokenizer (the accelerator configs'
  32,000 ids): a captioner that emits such an id gets UNK, not a sentencepiece IndexError."""
  tok = shapes_handle.tokenizer
  ids = tok.encode(["a red circle"], 8)
  ids[0, 1] = tok.vocab_size + 100
  text = tok.decode(ids)[0]
  assert text.startswith("a") and text.endswith("circle") and "\u2047" in text, text


def test_shuffle_block_keeps_blocks_of_consecutive_records_together():
  """`data.shuffle_block=2`: records 2k and 2k+1 (a video and its twin) always land side by
  side, so they share a batch; every record appears once per epoch and epochs differ."""
  records = list(range(12))
  stream = pipeline.shuffled_stream(records, seed=3, shuffle_block=2)
  epochs = [[stream[e * 12 + i] for i in range(12)] for e in range(3)]
  for order in epochs:
    assert sorted(order) == records
    for i in range(0, 12, 2):
      assert order[i] % 2 == 0 and order[i + 1] == order[i] + 1
  assert epochs[0] != epochs[1] != epochs[2]
  assert [pipeline.shuffled_stream(records, 3, 2)[i] for i in range(24)] == epochs[0] + epochs[1]
  plain = pipeline.shuffled_stream(records, seed=3)
  assert any(plain[i] // 2 != plain[i + 1] // 2 for i in range(0, 12, 2))
  with pytest.raises(ValueError, match="not a multiple of data.shuffle_block"):
    pipeline.TrainIterator(None, "train", "", 3, seed=0, shuffle_block=2)
