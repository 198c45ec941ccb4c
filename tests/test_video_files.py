"""Real video input (vlx/data/video_files.py, vlx/families/video/classify.py) on tiny videos the
tests write with PyAV: frame i of every video is grey level 10 + 5 i, so the frames a sampler
picked can be read back from the pixels. Uniform and segment sampling, clips x crops views,
padding of short videos, seeking and stopping early, corrupt files skipped and counted by the
real pipeline, the MSR-VTT layout, TFDS's ucf101 read without TensorFlow, and one 2-step
`vlx.main` run on MSR-VTT files that evaluates 2-view zero-shot on ucf101 (~27 s of CPU of
the file's ~31, nearly all of it compiling the step and saving the checkpoint)."""

import io
import json
import math
import os

import av
import numpy as np
import pytest

from vlx import registry
from vlx.data import pipeline, sources, video_files
from vlx.data.pp_ops import CorruptRecord
from vlx.families.video import classify
from vlx_testlib import REPO, read_metrics


def write_video(path, num_frames, width=32, height=32, codec="libx264", fps=8, keyint=None):
  """Frame i is uniform grey 10 + 5 i (lossless x264, or VP8 in WebM: a few levels off)."""
  container = av.open(str(path), "w")
  stream = container.add_stream(codec, rate=fps)
  stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
  if codec == "libx264":
    stream.options = {"crf": "0", **({"x264-params": f"keyint={keyint}:min-keyint={keyint}:"
                                                       "scenecut=0"} if keyint else {})}
  for i in range(num_frames):
    frame = av.VideoFrame.from_ndarray(np.full((height, width, 3), 10 + 5 * i, np.uint8),
                                       format="rgb24")
    for packet in stream.encode(frame):
      container.mux(packet)
  for packet in stream.encode():
    container.mux(packet)
  container.close()
  return str(path)


def frame_numbers(video):
  """Which source frame each frame of `video [T, H, W, 3]` is (-2 for a black pad frame)."""
  return np.round((video.reshape(len(video), -1).mean(axis=1) - 10) / 5).astype(int).tolist()


def decode(path, *args, seed=0):
  handle = sources.DatasetHandle(splits={}, tokenizer=None, image_key="video_path",
                                 label_key=None)
  fn = registry.PP_OPS.get("decode_video_file")(handle, *args)
  return fn({"video_path": str(path), "captions": ["a caption"]}, np.random.default_rng(seed))


# ---- Sampling ------------------------------------------------------------------------------


def test_frame_indices_uniform_segment_clips_and_padding():
  idx, mask = video_files.frame_indices(12, 4, "uniform")
  assert idx.tolist() == [[1, 4, 7, 10]] and mask.all()         # centres of 4 spans of 3
  assert video_files.frame_indices(12, 4, "segment")[0].tolist() == [[1, 4, 7, 10]]
  # Two test clips: phases 1/4 and 3/4 of each span.
  assert video_files.frame_indices(12, 4, "uniform", clips=2)[0].tolist() == [
      [0, 3, 6, 9], [2, 5, 8, 11]]
  rng = np.random.default_rng(0)
  draws = np.concatenate([video_files.frame_indices(12, 4, "segment", True, rng)[0]
                          for _ in range(50)])
  assert ((draws // 3) == np.arange(4)).all()                  # one frame in each segment
  assert all(set(draws[:, j]) == {3 * j, 3 * j + 1, 3 * j + 2} for j in range(4))
  assert (video_files.frame_indices(12, 4, "uniform", True, rng)[0] == [1, 4, 7, 10]).all()
  idx, mask = video_files.frame_indices(3, 8, "segment", True, rng)
  assert idx.tolist() == [[0, 1, 2, -1, -1, -1, -1, -1]]        # padded, not stretched
  assert mask.tolist() == [True] * 3 + [False] * 5
  assert video_files.crop_offsets(24, 16, 3) == [0, 4, 8]
  assert video_files.crop_offsets(24, 16) == [4]
  assert {video_files.crop_offsets(24, 16, 1, True, rng)[0] for _ in range(60)} == set(range(9))
  with pytest.raises(ValueError, match="sampling"):
    video_files.frame_indices(12, 4, "dense")


def test_mp4_and_webm_frames_views_and_short_videos(tmp_path):
  mp4 = write_video(tmp_path / "a.mp4", 12)
  webm = write_video(tmp_path / "a.webm", 12, codec="libvpx")   # no frame count in WebM
  for path in (mp4, webm):
    ex = decode(path, 4, 16)
    assert ex["video"].shape == (4, 16, 16, 3) and ex["video"].dtype == np.uint8
    assert frame_numbers(ex["video"]) == [1, 4, 7, 10], path
    assert ex["frame_mask"].tolist() == [True] * 4 and ex["captions"] == ["a caption"]
    for seed in range(3):
      got = frame_numbers(decode(path, 4, 16, "segment", "train", seed=seed)["video"])
      assert [g // 3 for g in got] == [0, 1, 2, 3], (path, got)
  # 2 clips x 3 crops of a 48 x 32 video (short side 32 -> 16: 24 x 16, crops at x 0, 4, 8).
  wide = write_video(tmp_path / "wide.mp4", 12, width=48, height=32)
  ex = decode(wide, 4, 16, "uniform", "test", 2, 3)
  assert ex["video"].shape == (6, 4, 16, 16, 3) and ex["frame_mask"].shape == (6, 4)
  assert [frame_numbers(v) for v in ex["video"]] == [[0, 3, 6, 9]] * 3 + [[2, 5, 8, 11]] * 3
  # Where the crops sit, exactly (decoded frames: red = x, green = frame number).
  frames = np.zeros((5, 32, 48, 3), np.uint8)
  frames[..., 0], frames[..., 1] = np.arange(48), np.arange(5)[:, None, None]
  video, mask = video_files.sample_views(video_files.ArrayFrames(frames), 5, 32, crops=3)
  assert video.shape == (3, 5, 32, 32, 3) and mask.all()
  assert [int(v[0, 0, 0, 0]) for v in video] == [0, 8, 16]
  assert (video[:, :, 0, 0, 1] == np.arange(5)).all()
  lefts = {int(video_files.sample_views(video_files.ArrayFrames(frames), 5, 32, train=True,
                                         rng=np.random.default_rng(s))[0][0, 0, 0, 0, 0])
           for s in range(40)}
  assert len(lefts) > 8 and min(lefts) >= 0 and max(lefts) <= 16
  # Shorter than T: all 3 frames, then black padding, masked.
  ex = decode(write_video(tmp_path / "short.mp4", 3), 8, 16, "segment", "train")
  assert frame_numbers(ex["video"]) == [0, 1, 2] + [-2] * 5
  assert ex["frame_mask"].tolist() == [True] * 3 + [False] * 5
  assert not ex["video"][3:].any()


def test_seeks_and_stops_early(tmp_path):
  """48 frames, a key frame every 8: frames 30, 31, 40 after a seek decode 24..40 (17
  frames), from the start 41; uniform 2 of 48 (frames 12, 36) stop after frame 36."""
  path = write_video(tmp_path / "long.mp4", 48, keyint=8)
  seeking = video_files.VideoFile(path, seek_after=1)
  from_start = video_files.VideoFile(path, seek_after=10 ** 9)
  a, b = seeking.read([30, 31, 40], 16), from_start.read([30, 31, 40], 16)
  assert sorted(a) == [30, 31, 40] and all(np.array_equal(a[i], b[i]) for i in a)
  assert frame_numbers(np.stack([a[i] for i in (30, 31, 40)])) == [30, 31, 40]
  assert (seeking.decoded, from_start.decoded) == (17, 41)
  src = video_files.VideoFile(path)
  video, _ = video_files.sample_views(src, 2, 16)
  assert frame_numbers(video[0]) == [12, 36] and src.decoded == 37
  # A second read of the same file starts over.
  assert frame_numbers(np.stack(list(src.read([1, 2], 16).values()))) == [1, 2]


# ---- MSR-VTT layout, corrupt files, training through vlx.main -------------------------------

CAPTIONS = {0: ["a red square moves right", "a square slides to the right"],
            1: ["a blue circle grows", "the circle gets bigger"],
            2: ["a green bar falls down", "a bar drops"],
            3: ["a yellow dot blinks", "a dot flashes on and off"],
            4: ["a person plays the guitar", "someone strums a guitar"],
            5: ["a dog runs on grass", "a puppy running outside"]}
SPLITS = {0: "train", 1: "train", 2: "train", 3: "train", 4: "test", 5: "test",
          6: "train", 7: "train", 8: "validate"}


@pytest.fixture(scope="module")
def msrvtt_root(tmp_path_factory):
  """CLIP4Clip's layout: msrvtt_data/{MSRVTT_data.json, MSRVTT_train.9k.csv,
  MSRVTT_JSFUSION_test.csv} and videos/all/. video6 is cut mid-file, video7 is not a video,
  video8 has no file."""
  root = tmp_path_factory.mktemp("msrvtt")
  videos = root / "videos" / "all"
  videos.mkdir(parents=True)
  for i in range(6):
    write_video(videos / f"video{i}.mp4", 6 + 2 * i, width=40, height=32)
  good = (videos / "video0.mp4").read_bytes()
  (videos / "video6.mp4").write_bytes(good[:len(good) // 2])
  (videos / "video7.mp4").write_bytes(b"not a video at all " * 50)
  data = root / "msrvtt_data"
  data.mkdir()
  (data / "MSRVTT_data.json").write_text(json.dumps({
      "info": {"year": "2016"},
      "videos": [{"id": i, "video_id": f"video{i}", "category": i % 3, "url": "",
                  "start time": 0.0, "end time": 1.0, "split": s} for i, s in SPLITS.items()],
      "sentences": [{"sen_id": 10 * i + k, "video_id": f"video{i}", "caption": c}
                    for i in range(9) for k, c in enumerate(CAPTIONS.get(i, ["a broken video"]))]}))
  (data / "MSRVTT_train.9k.csv").write_text(
      "video_id\n" + "".join(f"video{i}\n" for i in (0, 1, 2, 3, 6)))
  (data / "MSRVTT_JSFUSION_test.csv").write_text(
      "key,vid_key,video_id,sentence\nret0,msr4,video4,a man with a guitar\n"
      "ret1,msr5,video5,a dog in a park\nret2,msr7,video7,nothing\n")
  return root


def _msrvtt(root):
  return registry.DATASETS.get("msrvtt")(root=str(root), vocab_size=64)


def test_msrvtt_layout_records_and_tokenizer(msrvtt_root):
  handle = _msrvtt(msrvtt_root)
  assert sorted(handle.splits) == ["test", "test_1k", "train", "train_9k", "validate"]
  train = handle.split("train")
  assert [r["video_id"] for r in train] == [f"video{i}" for i in (0, 1, 2, 3, 6, 7)]
  rec = train[1]
  assert rec["captions"] == CAPTIONS[1] and rec["category"] == 1
  assert rec["video_path"] == str(msrvtt_root / "videos" / "all" / "video1.mp4")
  assert len(handle.split("train_9k")) == 5 and handle.split("train_9k")[0]["captions"] == \
      CAPTIONS[0]
  assert [r["captions"] for r in handle.split("test_1k")] == [
      ["a man with a guitar"], ["a dog in a park"], ["nothing"]]    # the csv's one sentence
  assert (msrvtt_root / "msrvtt_data" / "spm_bpe_64.model").exists()
  ids = handle.tokenizer.encode(["a dog runs on grass"], 16)
  assert handle.tokenizer.decode(ids)[0] == "a dog runs on grass"
  ex = pipeline.example_spec(handle, "train", "decode_video_file(4, 16)|video_value_range(-1,1)",
                             ("video", "frame_mask"))
  assert ex == {"video": ((4, 16, 16, 3), np.float32), "frame_mask": ((4,), np.bool_)}
  with pytest.raises(FileNotFoundError, match="data.source.root"):
    registry.DATASETS.get("msrvtt")(root=str(msrvtt_root / "nowhere"))


def test_corrupt_and_missing_videos_are_skipped_and_counted(msrvtt_root, tmp_path):
  """A cut mp4 (its index is gone), a cut WebM (decodes half its frames, then ends), bytes
  that are no video and a missing file: each a CorruptRecord naming the file, each skipped
  and counted by the training iterator and by evaluation reads."""
  handle = _msrvtt(msrvtt_root)
  webm = (tmp_path / "cut.webm")
  write_video(tmp_path / "full.webm", 12, codec="libvpx")
  data = (tmp_path / "full.webm").read_bytes()
  webm.write_bytes(data[:len(data) * 2 // 3])
  for path, why in ((msrvtt_root / "videos/all/video6.mp4", "video6.mp4"),
                    (webm, "ends after"), (msrvtt_root / "videos/all/video7.mp4", "video7"),
                    (tmp_path / "absent.mp4", "absent.mp4")):
    with pytest.raises(CorruptRecord, match=why):
      decode(path, 4, 16)
  pp = "decode_video_file(4, 16, 'segment', 'train')|video_value_range(-1,1)|sample_caption|" \
       "tokenize(16)"
  it = pipeline.TrainIterator(handle, "train", pp, 4, seed=0, num_threads=1, prefetch=1,
                              keys=("video", "text", "frame_mask"))
  batches = [next(it) for _ in range(3)]                        # 12 of 4 good videos
  assert all(b["video"].shape == (4, 4, 16, 16, 3) and b["frame_mask"].all() for b in batches)
  assert it.counter.count >= 4                                  # video6, video7, twice each
  out = pipeline.load_task_arrays(handle, "test_1k", "decode_video_file(4, 16)",
                                  ("video", "frame_mask"))
  assert out["skipped"] == 1 and out["video"].shape == (2, 4, 16, 16, 3)
  with pytest.raises(ValueError, match="no readable record"):
    pipeline.load_task_arrays(handle, "validate", "decode_video_file(4, 16)", ("video",))


# ---- UCF-101 through TFDS, zero-shot with views ---------------------------------------------


def _jpeg(value, width=40, height=32):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  buf = io.BytesIO()
  Image.fromarray(np.full((height, width, 3), value, np.uint8)).save(buf, format="JPEG",
                                                                      quality=95)
  buf.seek(0)
  return buf


@pytest.fixture(scope="module")
def ucf101_data_dir(tmp_path_factory):
  """A tiny `ucf101/ucf101_1_256` as TFDS stores it: ArrayRecord, TFDS's 101 labels, frames
  as a sequence of JPEGs. TFDS's own builder cannot run here (its Video feature needs
  TensorFlow, its download the network and ffmpeg), so a stand-in builder writes the same
  stored form (a Video is stored as a Sequence of Image) and features.json then names the
  Video feature exactly as TFDS writes it (from TFDS's own VideoFeature proto)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from google.protobuf import json_format  # pylint: disable=g-import-not-at-top
  from tensorflow_datasets.core.proto import feature_pb2  # pylint: disable=g-import-not-at-top

  class Ucf101StandIn(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    name = "ucf101"
    VERSION = tfds.core.Version("2.0.0")
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="ucf101_1_256")]

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          "video": tfds.features.Sequence(tfds.features.Image(encoding_format="jpeg")),
          "label": tfds.features.ClassLabel(
              names_file=tfds.core.tfds_path("video/ucf101_labels.txt"))}))

    def _split_generators(self, dl_manager):
      return {"train": self._generate_examples([0, 1]), "test": self._generate_examples(
          [0, 1, 2, 4])}

    def _generate_examples(self, labels):
      for k, label in enumerate(labels):  # 10 frames; video k of a split starts at level 40 k
        yield f"v{label}", {"video": [_jpeg(10 + 5 * (i + 8 * k)) for i in range(10)],
                            "label": label}

  data_dir = tmp_path_factory.mktemp("ucf_tfds")
  builder = Ucf101StandIn(config="ucf101_1_256", data_dir=str(data_dir),
                          file_format="array_record")
  builder.download_and_prepare()
  path = os.path.join(builder.data_dir, "features.json")
  with open(path) as f:
    features = json.load(f)
  video = feature_pb2.Feature(
      python_class_name="tensorflow_datasets.core.features.video_feature.Video",
      video=feature_pb2.VideoFeature(shape=feature_pb2.Shape(dimensions=[-1, 256, 256, 3]),
                                     dtype="uint8", encoding_format="jpeg",
                                     ffmpeg_extra_args=["-vf", "scale=256x256"]))
  features["featuresDict"]["features"]["video"] = json_format.MessageToDict(video)
  with open(path, "w") as f:
    json.dump(features, f)
  return str(data_dir)


def test_ucf101_by_name_without_tensorflow(ucf101_data_dir):
  handle = registry.DATASETS.get("ucf101")(data_dir=ucf101_data_dir)
  assert len(handle.class_names) == 101 and handle.class_names[:2] == [
      "apply eye makeup", "apply lipstick"]
  assert video_files.class_words("YoYo") == "yo yo"
  test = handle.split("test")
  assert len(test) == 4 and len(handle.split("train")) == 2
  assert sorted(int(r["label"]) for r in test) == [0, 1, 2, 4]
  rec = test[0]
  assert rec["captions"] == [handle.templates[0].format(handle.class_names[int(rec["label"])])]
  ex = pipeline.load_task_arrays(handle, "test", "decode_video_file(4, 16, 'uniform', 'test', 2)",
                                 ("video", "frame_mask", "label"))
  assert ex["video"].shape == (4, 2, 4, 16, 16, 3) and ex["skipped"] == 0
  starts = [8 * k for k in range(4)]
  got = sorted((frame_numbers(v[0]), frame_numbers(v[1])) for v in ex["video"])
  assert got == [([s + 0, s + 3, s + 5, s + 8], [s + 1, s + 4, s + 6, s + 9]) for s in starts]
  with pytest.raises(sources.DatasetNotBuiltError, match="tfds build ucf101/ucf101_2"):
    registry.DATASETS.get("ucf101")(config="ucf101_2", data_dir=ucf101_data_dir)


def test_view_averaging_is_mean_of_view_scores():
  """Two classes, two views per video: video 0's views each lean to a different class and
  their mean picks the right one; averaging embeddings equals averaging cosine scores."""
  cls = np.eye(2, 3)
  views = np.array([[[0.6, 0.8, 0.0], [1.0, 0.0, 0.0]],      # label 0: view 0 says class 1
                    [[0.0, 1.0, 0.0], [0.0, 0.6, 0.8]]])     # label 1
  scores = classify.view_scores(views, cls)
  assert np.allclose(scores, np.einsum("nvd,cd->nvc", views, cls).mean(1))
  labels = np.array([0, 1])
  assert classify.accuracies(scores, labels)["top1"] == 1.0
  assert classify.accuracies(views[:, 0] @ cls.T, labels)["top1"] == 0.5


def test_msrvtt_trains_through_main_and_zero_shots_ucf101_with_two_views(
    msrvtt_root, ucf101_data_dir, tmp_path):
  """configs/vivit.py:tiny,smoke on the MSR-VTT files (segment sampling, 4 frames of 16 px,
  frame masks in the batch; two of six train videos corrupt): 2 steps, then zero-shot on
  ucf101 with 2 clips per video, the prompts in the run's tokenizer. (Retrieval on MSR-VTT's
  test split is left out: its evaluator is tests/test_video_family.py's, and each evaluator
  compiles its own programs, ~4 s of CPU.)"""
  from vlx import config_lib, main as vlx_main  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / "run"
  config = f"{REPO / 'configs' / 'vivit.py'}:tiny,smoke"
  max_len = config_lib.load_config_file(config).data.max_len  # what its text tower takes
  source = {"root": str(msrvtt_root), "vocab_size": 64}
  zeroshot = {"type": "video_zeroshot", "split": "test",
              "pp": "decode_video_file(4, 16, 'uniform', 'test', 2)|video_value_range(-1,1)",
              "dataset": {"name": "ucf101", "source": {"data_dir": ucf101_data_dir}}}
  rc = vlx_main.main([
      f"--config={config}", f"--workdir={workdir}", "--config.data.name=msrvtt",
      f"--config.data.source={source!r}",
      "--config.data.image_size=16", "--config.data.num_frames=4",
      "--config.data.keys=('video','text','frame_mask')", "--config.data.shuffle_block=1",
      "--config.data.pp_train=decode_video_file(4, 16, 'segment', 'train')|"
      f"video_value_range(-1,1)|sample_caption|tokenize({max_len})",
      "--config.data.pp_eval=decode_video_file(4, 16)|video_value_range(-1,1)",
      "--config.model.video.num_frames=4", "--config.model.video.depth=1",
      "--config.model.text.depth=1", "--config.total_steps=2",
      f"--config.evals={{'zs': {zeroshot!r}}}"])
  assert rc in (0, None)
  rows = read_metrics(workdir)
  train = [r for r in rows if "train/loss" in r]
  assert [r["step"] for r in train] == [2] and math.isfinite(train[0]["train/clip/loss"])
  assert train[0]["data/skipped_records"] >= 2                  # video6 and video7, skipped
  final = {k: v for r in rows if r["step"] == 2 for k, v in r.items()}
  assert final["zs/num_views"] == 2 and final["zs/num_videos"] == 4
  assert 0 <= final["zs/top1"] <= final["zs/top5"] <= 1 and 0 <= final["zs/view_top1"] <= 1
