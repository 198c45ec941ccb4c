"""Real video input: frames sampled from video files (PyAV), MSR-VTT (`msrvtt`) and TFDS's
UCF-101 (`ucf101`), and the pp op `decode_video_file` that turns any of them into the keys
`decode_video` gives (`video` uint8 [T, S, S, 3], `captions`, `label`) plus `frame_mask` [T].

Sampling (`frame_indices`): T positions `(j + phase) * n / T`, j = 0..T-1, over a video of
n frames. `uniform`: phase 1/2 (each of T equal spans' centre frame), the same at train and
test. `segment` (TSN): at train each span draws its own phase in [0, 1); at test, the centre.
`clips` K > 1 (test views): clip k takes phase (k + 1/2) / K. A video shorter than T frames
gives all its n frames then T - n zero frames, `frame_mask` False on them: padding, never a
stretched or repeated frame, and every example has a [T] mask so batches stack.

Space: the short side is resized to `size` (while decoding, by libswscale), then a `size` x
`size` crop: random along both axes at train, centred at test, or `crops` C > 1 crops evenly
spaced along the long side (C = 3: both ends and the centre, the usual 3-crop test). Views are
clip-major (view = k * C + c); with more than one view `video` is [V, T, S, S, 3] and
`frame_mask` [V, T] (the `video_zeroshot` evaluator averages them).

Decoding reads only what the sample needs: frames are decoded in order and decoding stops
after the last wanted one; when the first wanted frame lies `seek_after` frames or more into
the file, the container seeks to the key frame before it first (frame numbers from
timestamps; if the seek lands past the wanted frame it decodes from the start instead). Frames
not wanted are never converted to RGB. A file that cannot be opened or decoded, or that ends
well before its header says (a cut download), raises CorruptRecord: the pipeline skips and
counts it. A small miscount (a container's frame count or duration off by a few frames) is
resampled from the frames that are there; a count too low (WebM has none, only a duration)
leaves the frames past it unsampled.

Requires the `video` extra (`pip install -e .[video]`: PyAV) for files; UCF-101's JPEG frames
decode with PIL.

Training on MSR-VTT (layout in `msrvtt_dataset`): `configs/vivit.py:b16x2` reads it as it is
(MSRVTT_DIR or `--config.data.source="{'root': ..., 'vocab_size': 32000}"`); the CPU-sized
model on it (the factorised tiny ViViT; `tiny,joint` for the joint one), with frame masks in
the batch and retrieval on the 1k-A test:

  python -m vlx.main --config=configs/vivit.py:tiny --workdir=workdirs/vivit_msrvtt \
    --config.data.name=msrvtt --config.data.source="{'root': '/data/MSRVTT', 'vocab_size': 8000}" \
    --config.data.train_split=train_9k --config.data.test_split=test_1k \
    --config.data.keys="('video','text','frame_mask')" --config.data.shuffle_block=1 \
    --config.data.pp_train="decode_video_file(8, 32, 'segment', 'train')|video_value_range(-1,1)|sample_caption|tokenize(32)" \
    --config.data.pp_eval="decode_video_file(8, 32)|video_value_range(-1,1)" \
    --config.evals="{'retrieval': {'type': 'video_retrieval'}}"

then zero-shot UCF-101 with 2 clips x 3 crops per video (the same flags, plus):

    --mode=eval --config.evals="{'ucf101': {'type': 'video_zeroshot', 'split': 'test',
      'pp': \"decode_video_file(8, 32, 'uniform', 'test', 2, 3)|video_value_range(-1,1)\",
      'dataset': {'name': 'ucf101', 'source': {'data_dir': '/data/tfds'}}}}"

(Checked: both run on the small fake MSR-VTT of tests/test_video_files.py and a ucf101 built by
TFDS's own Ucf101 builder with TensorFlow, fed frames instead of the download.)
"""

from __future__ import annotations

import csv
import collections
import io
import json
import os
import re
import threading
from collections.abc import Sequence
from typing import Dict, List, Optional, Tuple

import numpy as np

from vlx import registry
from vlx.data import image_ops, pp_ops, sources
from vlx.data.pp_ops import CorruptRecord
from vlx.data.tokenizer import Tokenizer

SAMPLINGS = ("uniform", "segment")
MODES = ("train", "test")
SEEK_AFTER = 64  # frames: closer than this, decoding from the start is as cheap as seeking


# ---- Where to sample -----------------------------------------------------------------------


def frame_indices(num_available: int, num_frames: int, sampling: str = "uniform",
                  train: bool = False, rng: Optional[np.random.Generator] = None,
                  clips: int = 1) -> Tuple[np.ndarray, np.ndarray]:
  """(indices [clips, T] int64, mask [T] bool) for a video of `num_available` frames (module
  doc). Padded positions have index -1 and mask False."""
  if sampling not in SAMPLINGS:
    raise ValueError(f"unknown sampling {sampling!r}; known: {', '.join(SAMPLINGS)}")
  n, t = int(num_available), int(num_frames)
  if n < 1 or t < 1 or clips < 1:
    raise ValueError(f"need >= 1 frame available, wanted and clip: {n}, {t}, {clips}")
  if n < t:
    row = np.concatenate([np.arange(n), np.full(t - n, -1)])
    return np.tile(row, (clips, 1)), np.arange(t) < n
  if train and sampling == "segment":
    phase = rng.random((clips, t))
  elif clips == 1:
    phase = np.full((1, t), 0.5)
  else:
    phase = np.repeat(((np.arange(clips) + 0.5) / clips)[:, None], t, axis=1)
  idx = np.floor((np.arange(t)[None, :] + phase) * n / t).astype(np.int64)
  return np.minimum(idx, n - 1), np.ones(t, bool)


def crop_offsets(length: int, size: int, crops: int = 1, train: bool = False,
                 rng: Optional[np.random.Generator] = None) -> List[int]:
  """Offsets of `size`-long crops along an axis of `length`: one random one at train, the
  centre for one test crop, `crops` evenly spaced ones (both ends included) for several."""
  margin = length - size
  if margin < 0:
    raise ValueError(f"cannot crop {size} from {length}")
  if train:
    return [int(rng.integers(0, margin + 1)) for _ in range(crops)]
  if crops == 1:
    return [margin // 2]
  return [int(round(v)) for v in np.linspace(0, margin, crops)]


def short_side_shape(height: int, width: int, size: int) -> Tuple[int, int]:
  """(h, w) with the short side `size` and the aspect kept (long side truncated, as
  `image_ops.resize_small`)."""
  if height <= width:
    return size, max(size, int(size * width / height))
  return max(size, int(size * height / width)), size


# ---- Frame sources -------------------------------------------------------------------------


class _EndedEarly(Exception):
  """The stream held fewer frames than counted: `count` were decoded."""

  def __init__(self, count: int):
    super().__init__(count)
    self.count = count


class VideoFile:
  """A video file (a path or a file object) read with PyAV: `count` (the header's frame
  count, or duration x rate where the container has none, e.g. WebM) and
  `read(wanted, size)`."""

  def __init__(self, path, seek_after: int = SEEK_AFTER):
    import av  # pylint: disable=g-import-not-at-top
    self.path, self.seek_after = path, int(seek_after)
    self.container = av.open(path)
    try:
      self._open_stream()
    except BaseException:
      self.container.close()
      raise
    self._used = False
    self.decoded = 0  # frames decoded by the last read (what seeking and stopping early save)

  def _open_stream(self):
    path = self.path
    if not self.container.streams.video:
      raise CorruptRecord(f"{path}: no video stream")
    self.stream = self.container.streams.video[0]
    self.stream.thread_type = "AUTO"
    self.rate = float(self.stream.average_rate or self.stream.guessed_rate or 0)
    count = int(self.stream.frames or 0)
    if count <= 0:
      seconds = (float(self.stream.duration * self.stream.time_base) if self.stream.duration
                 else (self.container.duration or 0) / 1e6)
      count = int(round(seconds * self.rate))
    if count <= 0:
      raise CorruptRecord(f"{path}: no frame count and no duration")
    self.count = count

  def close(self):
    self.container.close()

  def _index(self, frame) -> int:
    start = self.stream.start_time or 0
    return int(round(float((frame.pts - start) * self.stream.time_base) * self.rate))

  def read(self, wanted: Sequence[int], size: int) -> Dict[int, np.ndarray]:
    """Frames `wanted` (sorted, distinct), short side resized to `size`: {index: [h, w, 3]}.
    Raises `_EndedEarly` when the stream ends first."""
    wanted = [int(i) for i in wanted]
    if wanted[0] >= self.seek_after and self.rate:
      got = self._decode(wanted, size, seek_to=wanted[0])
      if got is not None:
        return got
    if self._used:
      self.container.seek(0)  # back to the start (a second read, or a seek that overshot)
    return self._decode(wanted, size, seek_to=None)

  def _decode(self, wanted, size, seek_to):
    self._used = True
    todo, out = set(wanted), {}
    last = wanted[-1]
    if seek_to is not None:
      start = self.stream.start_time or 0
      target = start + int(seek_to / self.rate / self.stream.time_base)
      self.container.seek(target, stream=self.stream, backward=True, any_frame=False)
    shape = None
    position, decoded = -1, 0
    for frame in self.container.decode(self.stream):
      position = self._index(frame) if frame.pts is not None else position + 1
      if seek_to is not None and decoded == 0 and position > seek_to:
        return None  # landed past the first wanted frame: decode from the start instead
      decoded += 1
      self.decoded = decoded
      if position in todo:
        if shape is None:
          shape = short_side_shape(frame.height, frame.width, size)
        out[position] = frame.to_ndarray(height=shape[0], width=shape[1], format="rgb24",
                                          interpolation="BILINEAR")
        todo.discard(position)
      if position >= last:
        break
    if todo:
      raise _EndedEarly(position + 1)
    return out


class ArrayFrames:
  """Decoded frames in memory (uint8 [n, H, W, 3], e.g. `synthetic_video`'s records)."""

  def __init__(self, frames: np.ndarray):
    self.frames, self.count = frames, len(frames)

  def read(self, wanted, size):
    return {int(i): image_ops.resize_small(self.frames[int(i)], size) for i in wanted}

  def close(self):
    pass


class EncodedFrames:
  """Frames stored one encoded image each (TFDS's Video feature: JPEG or PNG bytes): only the
  wanted ones are decoded, JPEGs at a reduced scale when that still covers `size`."""

  def __init__(self, encoded: Sequence[bytes]):
    self.encoded, self.count = list(encoded), len(encoded)

  def read(self, wanted, size):
    from PIL import Image  # pylint: disable=g-import-not-at-top
    out = {}
    for i in wanted:
      img = Image.open(io.BytesIO(self.encoded[int(i)]))
      w, h = img.size
      shape = short_side_shape(h, w, size)
      img.draft("RGB", (shape[1], shape[0]))  # JPEG: decode at 1/2, 1/4, 1/8 scale if enough
      out[int(i)] = image_ops.resize_small(img.convert("RGB"), size)
    return out

  def close(self):
    pass


def open_frames(value, seek_after: int = SEEK_AFTER):
  """A record's video as a frame source: a path, decoded frames, or encoded frames."""
  if isinstance(value, (str, os.PathLike)):
    return VideoFile(os.fspath(value), seek_after)
  if isinstance(value, bytes):  # a whole encoded file in the record
    return VideoFile(io.BytesIO(value), seek_after)
  arr = value if isinstance(value, np.ndarray) else np.asarray(value, dtype=object)
  if arr.dtype == np.uint8 and arr.ndim == 4 and arr.shape[-1] == 3:
    return ArrayFrames(arr)
  if arr.ndim == 1 and arr.dtype == object:
    return EncodedFrames([bytes(v) for v in arr])
  raise CorruptRecord(f"not a video: {type(value).__name__} {getattr(arr, 'shape', '')}")


# ---- Sampling views ------------------------------------------------------------------------


def _tolerated(decoded: int, counted: int) -> bool:
  """A header or duration a few frames off is a miscount; far off is a cut file."""
  return decoded >= 1 and decoded >= counted - max(2, counted // 10)


def sample_views(source, num_frames: int, size: int, sampling: str = "uniform",
                 train: bool = False, rng: Optional[np.random.Generator] = None,
                 clips: int = 1, crops: int = 1) -> Tuple[np.ndarray, np.ndarray]:
  """(video uint8 [clips * crops, T, size, size, 3], frame_mask [clips * crops, T])."""
  rng = rng if rng is not None else np.random.default_rng(0)
  count = source.count
  for _ in range(2):
    indices, mask = frame_indices(count, num_frames, sampling, train, rng, clips)
    wanted = sorted({int(i) for i in indices.ravel() if i >= 0})
    try:
      frames = source.read(wanted, size)
      break
    except _EndedEarly as e:
      if not _tolerated(e.count, count) or e.count == count:
        raise CorruptRecord(f"stream ends after {e.count} of {count} frames "
                            "(truncated?)") from None
      count = e.count
  else:
    raise CorruptRecord("the frame count changed twice while decoding")
  h, w = next(iter(frames.values())).shape[:2]
  views, masks = [], []
  for k in range(clips):
    clip = np.zeros((num_frames, h, w, 3), np.uint8)
    for j, i in enumerate(indices[k]):
      if i >= 0:
        clip[j] = frames[int(i)]
    # The short side is `size` already: crops run along the long side.
    offsets = crop_offsets(max(h, w), size, crops, train, rng)
    centre = crop_offsets(min(h, w), size)[0]
    for off in offsets:
      views.append(clip[:, off:off + size, centre:centre + size] if h > w
                   else clip[:, centre:centre + size, off:off + size])
      masks.append(mask)
  return np.stack(views), np.stack(masks)


@registry.PP_OPS.register("decode_video_file")
def decode_video_file(handle, num_frames: int, size: int, sampling: str = "uniform",
                      mode: str = "test", clips: int = 1, crops: int = 1,
                      seek_after: int = SEEK_AFTER):
  """`video` uint8 [T, size, size, 3] (or [V, T, ...] for V = clips * crops > 1 views),
  `frame_mask` [T] bool (or [V, T]), `captions`, `label` when the record has one, and the
  dataset's annotation keys. The record's `handle.image_key` holds a path (MSR-VTT), encoded
  frames (TFDS's Video feature) or decoded frames; `mode` 'train' draws the segment phases
  and crops with the pipeline's rng, 'test' is deterministic."""
  if sampling not in SAMPLINGS:
    raise ValueError(f"decode_video_file: unknown sampling {sampling!r}; known: {SAMPLINGS}")
  if mode not in MODES:
    raise ValueError(f"decode_video_file: mode must be one of {MODES}, got {mode!r}")
  if min(int(num_frames), int(size), int(clips), int(crops)) < 1:
    raise ValueError("decode_video_file: num_frames, size, clips and crops must be >= 1")
  train, views = mode == "train", int(clips) * int(crops)

  def fn(record, rng):
    source = None
    try:
      # The record's own fields first (cheap, and a record without captions is skipped
      # before its video is decoded), then the frames.
      out = pp_ops.record_fields(handle, record, {}, annotation=pp_ops.plain_text)
      value = sources.get_path(record, handle.image_key)
      if value is None:
        raise CorruptRecord(str(record.get("video_error") or "record has no video"))
      source = open_frames(value, seek_after)
      video, mask = sample_views(source, int(num_frames), int(size), sampling, train, rng,
                                 int(clips), int(crops))
      out.update(video=video if views > 1 else video[0],
                 frame_mask=mask if views > 1 else mask[0])
      return out
    except CorruptRecord as e:
      raise CorruptRecord(f"{_where(record, handle)}: {e}") from None
    except Exception as e:  # pylint: disable=broad-except
      raise CorruptRecord(f"{_where(record, handle)}: {type(e).__name__}: {e}") from e
    finally:
      if source is not None:
        source.close()
  return fn


def _where(record, handle) -> str:
  for key in ("video_path", "video_id", "name"):
    if isinstance(record, dict) and key in record:
      return pp_ops.to_str(record[key])
  return f"video record ({handle.image_key})"


# ---- MSR-VTT -------------------------------------------------------------------------------

# The annotation JSON: CLIP4Clip's merged file (in its msrvtt_data.zip, with the csv files
# below), or the official release's two files (train/validate, and test).
MSRVTT_JSON = "MSRVTT_data.json"
MSRVTT_OFFICIAL_JSON = ("train_val_videodatainfo.json", "test_videodatainfo.json")
# Split name -> csv (CLIP4Clip): the 1k-A protocol trains on 9k (or 7k) videos, tests on the
# JSFusion 1k test videos with one sentence each (the csv's `sentence`).
MSRVTT_CSV = {"train_9k": "MSRVTT_train.9k.csv", "train_7k": "MSRVTT_train.7k.csv",
              "test_1k": "MSRVTT_JSFUSION_test.csv"}


class MsrvttSplit(Sequence):
  """One split's videos, one record each: `video_path`, `video_id`, `captions` (every
  sentence of the video, or the csv's one for test_1k), `category` (-1 if unknown)."""

  def __init__(self, rows: List[Tuple[str, List[str], int]], video_dir: str):
    self.rows, self.video_dir = rows, video_dir

  def __len__(self) -> int:
    return len(self.rows)

  def path(self, video_id: str) -> str:
    mp4 = os.path.join(self.video_dir, f"{video_id}.mp4")
    if os.path.exists(mp4):
      return mp4
    webm = os.path.join(self.video_dir, f"{video_id}.webm")
    return webm if os.path.exists(webm) else mp4

  def __getitem__(self, i):
    if isinstance(i, slice):
      return [self[j] for j in range(*i.indices(len(self)))]
    video_id, captions, category = self.rows[int(i)]
    return {"video_path": self.path(video_id), "video_id": video_id,
            "captions": list(captions), "category": np.int64(category)}

  def captions(self):
    return [c for _, caps, _ in self.rows for c in caps]


def _find(names: Sequence[str], dirs: Sequence[str]) -> Optional[str]:
  for d in dirs:
    for name in names:
      if os.path.exists(os.path.join(d, name)):
        return os.path.join(d, name)
  return None


def read_msrvtt_annotations(dirs: Sequence[str]):
  """(videos {video_id: (split, category)}, sentences {video_id: [caption]}) from the
  merged JSON or the official pair, found in `dirs`."""
  merged = _find([MSRVTT_JSON], dirs)
  files = [merged] if merged else [p for p in (_find([n], dirs) for n in MSRVTT_OFFICIAL_JSON)
                                   if p]
  if not files:
    raise FileNotFoundError(f"msrvtt: no {MSRVTT_JSON} (or {' + '.join(MSRVTT_OFFICIAL_JSON)}) "
                            f"in {', '.join(dirs)}")
  videos, sentences = {}, collections.defaultdict(list)
  for path in files:
    with open(path) as f:
      data = json.load(f)
    for v in data.get("videos", ()):
      videos[str(v["video_id"])] = (str(v.get("split", "")), int(v.get("category", -1)))
    for s in data.get("sentences", ()):
      sentences[str(s["video_id"])].append(str(s["caption"]).strip())
  return videos, sentences


def _csv_rows(path: str):
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


@registry.DATASETS.register("msrvtt")
def msrvtt_dataset(root: str = "", video_dir: str = "", annotation_dir: str = "",
                   cache_dir: str = "", vocab_size: int = 8_000, tokenizer: Optional[str] = None,
                   **unused) -> sources.DatasetHandle:
  """MSR-VTT under `root` (or $MSRVTT_DIR), in CLIP4Clip's layout:

    ROOT/videos/all/video0.mp4 ... video9999.mp4        (MSRVTT_Videos.zip)
    ROOT/msrvtt_data/MSRVTT_data.json                     (msrvtt_data.zip; or ROOT/)
    ROOT/msrvtt_data/MSRVTT_train.9k.csv, MSRVTT_train.7k.csv, MSRVTT_JSFUSION_test.csv

  or the official `train_val_videodatainfo.json` + `test_videodatainfo.json`. Splits: `train`
  (6,513 videos), `validate` (497), `test` (2,990) from the JSON's `split`, each video with its
  20 sentences; with the csv files also `train_9k` / `train_7k` (every sentence of the listed
  videos) and `test_1k` (the 1k-A test: 1,000 videos, the csv's one sentence each). Derived
  files go to `cache_dir` (default: the annotation directory): the sentencepiece tokenizer
  `spm_bpe_{vocab_size}.model`, trained once on the train split's sentences. `tokenizer`: a
  sentencepiece model to use instead (or `data.tokenizer`, e.g. a CLIP BPE). A video file
  that is missing or does not decode is skipped and counted by the pipeline.

  Records carry `video_path`; read them with `decode_video_file` (module doc)."""
  del unused
  root = os.path.expanduser(root or os.environ.get("MSRVTT_DIR", ""))
  if not root or not os.path.isdir(root):
    raise FileNotFoundError(f"msrvtt: no data directory {root!r}: set data.source.root "
                            "(see vlx/data/video_files.py for the files it holds)")
  dirs = [os.path.expanduser(annotation_dir)] if annotation_dir else [
      os.path.join(root, "msrvtt_data"), root]
  video_dir = os.path.expanduser(video_dir) if video_dir else os.path.join(root, "videos", "all")
  videos, sentences = read_msrvtt_annotations(dirs)
  by_split = collections.defaultdict(list)
  for video_id, (split, category) in videos.items():
    by_split[split].append((video_id, sentences.get(video_id, []), category))
  splits = {name: MsrvttSplit(sorted(rows, key=lambda r: _video_number(r[0])), video_dir)
            for name, rows in by_split.items() if name}
  for name, filename in MSRVTT_CSV.items():
    path = _find([filename], dirs)
    if not path:
      continue
    rows = _csv_rows(path)
    if name == "test_1k":
      split = [(r["video_id"], [r["sentence"].strip()], videos.get(r["video_id"], ("", -1))[1])
               for r in rows]
    else:
      split = [(r["video_id"], sentences.get(r["video_id"], []),
                videos.get(r["video_id"], ("", -1))[1]) for r in rows]
    splits[name] = MsrvttSplit(split, video_dir)
  if not splits:
    raise FileNotFoundError(f"msrvtt: the annotations in {', '.join(dirs)} list no videos")
  cache_dir = os.path.expanduser(cache_dir) if cache_dir else os.path.dirname(
      _find([MSRVTT_JSON, *MSRVTT_OFFICIAL_JSON], dirs))
  if tokenizer:
    tok = Tokenizer(tokenizer)
  else:
    train = splits.get("train_9k") or splits.get("train") or next(iter(splits.values()))
    with sources._file_lock(os.path.join(cache_dir, ".msrvtt.lock")):  # pylint: disable=protected-access
      tok = sources.tokenizer_beside(cache_dir, train.captions, vocab_size)
  return sources.DatasetHandle(splits=splits, tokenizer=tok, image_key="video_path",
                               captions_key="captions", label_key=None,
                               annotation_keys=("video_id", "category"))


def _video_number(video_id: str):
  m = re.search(r"(\d+)$", video_id)
  return (int(m.group(1)) if m else -1, video_id)


# ---- UCF-101 from TFDS ---------------------------------------------------------------------

UCF101_TEMPLATES = ("a video of a person {}.", "a video of {}.", "a person {}.")


def class_words(name: str) -> str:
  """UCF-101's CamelCase labels as words: 'ApplyEyeMakeup' -> 'apply eye makeup',
  'YoYo' -> 'yo yo'."""
  return " ".join(re.findall(r"[A-Z]+[a-z]*|[a-z]+|\d+", name)).lower()


class _EncodedVideoSource(Sequence):
  """A TFDS split of (Video, ClassLabel) records as {`video`: the frames' encoded bytes,
  `label`, `captions`}: the ArrayRecord data source read with TFDS's NumPy example parser,
  the frames left encoded for `decode_video_file` to decode only the sampled ones."""

  def __init__(self, file_instructions, specs, video_key: str, label_key: str,
               captions: Sequence[str]):
    self.file_instructions, self.specs = file_instructions, specs
    self.video_key, self.label_key, self.class_captions = video_key, label_key, list(captions)
    self._source, self._lock = None, threading.Lock()

  def __getstate__(self):
    return {k: v for k, v in self.__dict__.items() if k not in ("_source", "_lock")}

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._source, self._lock = None, threading.Lock()

  def _data(self):
    if self._source is None:
      with self._lock:
        if self._source is None:
          from array_record.python import array_record_data_source  # pylint: disable=g-import-not-at-top
          self._source = array_record_data_source.ArrayRecordDataSource(self.file_instructions)
    return self._source

  def __len__(self) -> int:
    return sum(int(fi.take) for fi in self.file_instructions)

  def __getitem__(self, i):
    if isinstance(i, slice):
      return [self[j] for j in range(*i.indices(len(self)))]
    from tensorflow_datasets.core import example_parser  # pylint: disable=g-import-not-at-top
    i = int(i) + len(self) if int(i) < 0 else int(i)
    if not 0 <= i < len(self):
      raise IndexError(f"record {i} of {len(self)}")
    raw = self._data()[i]
    ex = example_parser.ExampleParserNp(self.specs).parse_example(raw)
    label = int(np.asarray(ex[self.label_key]))
    return {"video": np.asarray(ex[self.video_key], dtype=object), "label": np.int64(label),
            "captions": [self.class_captions[label]]}


def _builder_dir(data_dir: str, name: str, config: str) -> str:
  base = os.path.join(data_dir, name, config)
  versions = sorted((d for d in (os.listdir(base) if os.path.isdir(base) else ())
                     if re.fullmatch(r"\d+\.\d+\.\d+", d)),
                    key=lambda v: tuple(int(x) for x in v.split(".")))
  if not versions:
    raise sources.DatasetNotBuiltError(
        f"dataset {name}/{config} is not built in {data_dir} (TFDS_DATA_DIR or "
        f"data.source.data_dir); build it once with: "
        f"{sources.build_command(f'{name}/{config}', data_dir)}")
  return os.path.join(base, versions[-1])


def tfds_video_splits(builder_dir: str, splits: Sequence[str], captions: Sequence[str],
                      video_key: str = "video", label_key: str = "label"):
  """{split: records} of a prepared TFDS video classification dataset, read without
  TensorFlow. TFDS's own `Video` feature cannot be built without TensorFlow (its constructor
  calls `tf.dtypes.as_dtype`), so neither `tfds.data_source` nor `builder_from_files` opens
  such a dataset; its stored form is a sequence of encoded images, which this parses with
  TFDS's NumPy parser from the `features.json` the dataset was built with."""
  from tensorflow_datasets.core import dataset_info, file_adapters  # pylint: disable=g-import-not-at-top
  from tensorflow_datasets.core import features as features_lib  # pylint: disable=g-import-not-at-top
  info = dataset_info.read_proto_from_builder_dir(builder_dir)
  fmt = file_adapters.FileFormat(info.file_format) if info.file_format else None
  if fmt is not file_adapters.FileFormat.ARRAY_RECORD:
    raise sources.DatasetNotBuiltError(
        f"{builder_dir} is stored as {fmt.value if fmt else 'tfrecord'}; vlx reads ArrayRecord: "
        f"rebuild it with --file_format=array_record")
  with open(os.path.join(builder_dir, "features.json")) as f:
    features = json.load(f)["featuresDict"]["features"]
  video = features[video_key]
  if not video.get("pythonClassName", "").endswith("video_feature.Video"):
    raise ValueError(f"{builder_dir}: feature {video_key!r} is {video.get('pythonClassName')}, "
                     "not a TFDS Video")
  encoding = video["video"].get("encodingFormat", "png")
  # The stored form of Video: a Sequence of Image, each a serialized encoded string.
  stand_in = features_lib.FeaturesDict({
      video_key: features_lib.Sequence(features_lib.Image(encoding_format=encoding)),
      label_key: features_lib.Tensor(shape=(), dtype=np.int64)})
  specs = stand_in.get_serialized_info()
  split_dict = dataset_info.get_split_dict_from_proto(info, builder_dir)
  missing = [s for s in splits if s not in split_dict]
  if missing:
    raise ValueError(f"{builder_dir} has no split(s) {missing}; it has {sorted(split_dict)}")
  return {s: _EncodedVideoSource(split_dict[s].file_instructions, specs, video_key, label_key,
                                 captions) for s in splits}


def _prompt_tokenizer(cache_dir: str, prompts: Sequence[str], vocab_size: int) -> Tokenizer:
  """A tokenizer of the class prompts cached in `cache_dir`, or, where that cannot be written
  (a shared read-only data dir), in a temporary one: it only lets the dataset load alone."""
  try:
    with sources._file_lock(os.path.join(cache_dir, ".ucf101.lock")):  # pylint: disable=protected-access
      return sources.tokenizer_beside(cache_dir, lambda: iter(prompts), vocab_size)
  except OSError:
    import tempfile  # pylint: disable=g-import-not-at-top
    return sources.tokenizer_beside(tempfile.mkdtemp(prefix="vlx_ucf101_"), lambda: iter(prompts),
                                    vocab_size)


@registry.DATASETS.register("ucf101")
def ucf101_dataset(config: str = "ucf101_1_256", data_dir: Optional[str] = None,
                   splits: Sequence[str] = ("train", "test"), templates=None,
                   tokenizer: Optional[str] = None, cache_dir: str = "", vocab_size: int = 256,
                   **unused) -> sources.DatasetHandle:
  """TFDS's `ucf101` (configs ucf101_1_256, ucf101_1, ucf101_2, ucf101_3) prepared as
  ArrayRecord in `data_dir`, read without TensorFlow (`tfds_video_splits`); building it needs
  TensorFlow and ffmpeg (`tfds build ucf101/ucf101_1_256 --file_format=array_record`).

  `class_names`: the 101 labels as words ('apply eye makeup'), for zero-shot classification
  (`video_zeroshot`); a record's caption is its class in the first template. The tokenizer:
  `data.tokenizer` (the model's own, which zero-shot needs), else `tokenizer` (a
  sentencepiece model), else one trained on the class prompts into `cache_dir` (default: the
  prepared dataset's folder) so that the dataset loads on its own."""
  del unused
  data_dir = sources.default_data_dir(data_dir)
  builder_dir = _builder_dir(data_dir, "ucf101", config)
  with open(os.path.join(builder_dir, "label.labels.txt")) as f:
    names = [class_words(line.strip()) for line in f if line.strip()]
  templates = tuple(templates or UCF101_TEMPLATES)
  split_sources = tfds_video_splits(builder_dir, splits, [templates[0].format(n) for n in names])
  if tokenizer:
    tok = Tokenizer(tokenizer)
  else:
    prompts = [t.format(n) for n in names for t in templates]
    tok = _prompt_tokenizer(os.path.expanduser(cache_dir) if cache_dir else builder_dir,
                            prompts, vocab_size)
  return sources.DatasetHandle(splits=split_sources, tokenizer=tok, class_names=names,
                               image_key="video", captions_key="captions", label_key="label",
                               templates=templates)
