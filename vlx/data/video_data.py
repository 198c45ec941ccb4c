"""The `synthetic_video` dataset and the preprocessing ops that read video records.

`decode` and `value_range` (vlx/data/pp_ops.py) expect one [H, W, 3] image under `image`;
a video is [T, H, W, 3] under `video`, so these ops sit beside them rather than widen them:
`decode_video|video_value_range(-1,1)|sample_caption|tokenize(16)` gives a batch key `video`
of shape [B, T, H, W, 3]. `video_qa`, `video_choice` and `video_span` turn a record's
questions, multiple choice and grounding span into model inputs and targets.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np
import tensorflow_datasets as tfds

from vlx import registry
from vlx.data import video_render as V
from vlx.data import pp_ops
from vlx.data.pp_ops import CorruptRecord
from vlx.data.sources import (DatasetHandle, _file_lock, default_data_dir, get_path,
                              tokenizer_beside)

# Every text field of a record: the tokenizer is trained on all of them, so captions,
# questions, choices and grounding queries tokenize alike whatever a config reads.
TEXT_FIELDS = ("captions", "questions", "mc_question", "mc_choices", "span_query")
# Record fields `decode_video` passes through for the task ops and evaluators.
ANNOTATION_KEYS = ("kind", "concept", "twin", "questions", "answers", "mc_question",
                   "mc_choices", "mc_answer", "span", "span_query", "frame_captions")


def _texts(source, limit: int = 20_000):
  for i in range(min(len(source), limit)):
    record = source[i]
    for field in TEXT_FIELDS:
      for text in np.atleast_1d(record[field]):
        yield pp_ops.to_str(text)


@registry.DATASETS.register("synthetic_video")
def synthetic_video(data_dir: Optional[str] = None, variant: str = "default",
                    vocab_size: int = 256, **unused) -> DatasetHandle:
  """Generated into the TFDS data dir on first use (`default`: 10k/1k videos of 8 x 32px;
  `small`: 256/64 for tests; `default_64px`), with a tokenizer trained beside it."""
  del unused
  from vlx.data import synthetic_video as builder_lib  # pylint: disable=g-import-not-at-top
  data_dir = default_data_dir(data_dir)
  with _file_lock(os.path.join(data_dir, f".synthetic_video_{variant}.lock")):
    builder = builder_lib.SyntheticVideo(config=variant, data_dir=data_dir,
                                         file_format="array_record")
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(verify_ssl=False))
    splits = {s: builder.as_data_source(split=s) for s in ("train", "test")}
    tokenizer = tokenizer_beside(builder.data_dir, lambda: _texts(splits["train"]), vocab_size,
                                 TEXT_FIELDS)
  return DatasetHandle(splits=splits, tokenizer=tokenizer, class_names=list(V.ACTIONS),
                       image_key="video", templates=V.TEMPLATES,
                       annotation_keys=ANNOTATION_KEYS, answer_vocab=V.ANSWERS)


@registry.PP_OPS.register("decode_video")
def decode_video(handle: DatasetHandle):
  """`video` uint8 [T, H, W, 3], `captions`, `label` and the annotation keys, text as str."""
  @pp_ops.decoding
  def fn(record, rng):
    del rng
    video = np.asarray(get_path(record, handle.image_key))
    if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8:
      raise CorruptRecord(f"video has shape {video.shape} dtype {video.dtype}")
    return pp_ops.record_fields(handle, record, {"video": video}, annotation=pp_ops.plain_text)
  return fn


@registry.PP_OPS.register("video_value_range")
def video_value_range(handle, lo: float = -1.0, hi: float = 1.0):
  return pp_ops.value_range(handle, lo, hi, key="video")


@registry.PP_OPS.register("preprocess_video")
def preprocess_video(handle, resize: int, resize_mode: str = "shortest", crop=None,
                     mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), resample: str = "bicubic",
                     crop_rounding: str = "floor"):
  """Every frame of `video` resized, cropped and normalised exactly as an imported image
  checkpoint expects (`preprocess_image`, frame by frame): a CLIP read frame by frame."""
  del handle
  from vlx.data import image_ops  # pylint: disable=g-import-not-at-top

  def fn(ex, rng):
    del rng
    ex["video"] = np.stack([image_ops.preprocess(f, resize, resize_mode, crop, mean, std,
                                                 resample, crop_rounding)
                            for f in ex["video"]])
    return ex
  return fn


@registry.PP_OPS.register("video_frame")
def video_frame(handle, which: str = "random"):
  """One frame of `video` as `image` (`random` for training, `central` to evaluate): still
  frames of the videos train the image model that image->video transfer starts from."""
  del handle
  if which not in ("random", "central"):
    raise ValueError(f"pp op video_frame: which={which!r}; known: random, central")

  def fn(ex, rng):
    video = ex.pop("video")
    t = int(rng.integers(len(video))) if which == "random" else len(video) // 2
    ex["image"], ex["frame_index"] = video[t], t
    return ex
  return fn


@registry.PP_OPS.register("still_caption")
def still_caption(handle, prob: float = 0.5):
  """After `video_frame`: with probability `prob`, the caption becomes the chosen frame's own
  (`frame_captions`: its shapes and where each is) instead of the sampled video caption. The
  video captions name colour and shape in the words the video tasks use; the frame captions
  add where, which no video caption of a still frame can teach (a shape 'moving left' is
  anywhere in one frame): an image model that keeps where is one whose frame embeddings let
  a temporal module read direction (docs/video_transfer.md). A frame caption of three shapes
  may run past a tiny config's 24 tokens: the last shape's region is then cut (static
  frames only: every temporal concept names one shape per frame)."""
  del handle

  def fn(ex, rng):
    if "frame_captions" not in ex:
      raise ValueError("pp op still_caption: the record has no frame_captions (synthetic_video "
                       "1.2.0 has them; place it after decode_video|video_frame)")
    if rng.random() < prob:
      ex["caption"] = pp_ops.to_str(ex["frame_captions"][ex["frame_index"]])
    return ex
  return fn


def _tokens(handle, texts: Sequence[str], max_len: int) -> np.ndarray:
  return handle.tokenizer.encode([t.rstrip("?") for t in texts], max_len)


@registry.PP_OPS.register("video_qa")
def video_qa(handle, max_len: int, index: Optional[int] = None):
  """One of the record's questions (drawn with the pipeline's rng, or number `index`):
  `question` (tokens), `question_string`, `answer` (index into the answer vocabulary) and
  `answer_scores` (its one-hot soft target, as VQA scores)."""
  num_answers = len(handle.answer_vocab or V.ANSWERS)

  def fn(ex, rng):
    i = int(rng.integers(len(ex["questions"]))) if index is None else int(index)
    question, answer = str(ex["questions"][i]), int(ex["answers"][i])
    scores = np.zeros(num_answers, np.float32)
    scores[answer] = 1.0
    ex.update(question=_tokens(handle, [question], max_len)[0], question_string=question,
              answer=np.int32(answer), answer_scores=scores)
    return ex
  return fn


video_qa.text_field = "questions"


@registry.PP_OPS.register("video_choice")
def video_choice(handle, max_len: int):
  """Multiple choice: `choices` (tokens [K, max_len]), `choice_strings` and `choice_target`
  (the right one's index). A temporal video's candidates hold its twin's description too."""

  def fn(ex, rng):
    del rng
    strings = [str(c) for c in ex["mc_choices"]]
    ex.update(choices=_tokens(handle, strings, max_len), choice_strings=strings,
              choice_target=np.int32(ex["mc_answer"]))
    return ex
  return fn


video_choice.text_field = "mc_choices"


@registry.PP_OPS.register("video_span")
def video_span(handle, max_len: int):
  """Temporal grounding: `query` (tokens of the event's description), `query_string`,
  `span` [t0, t1) (int32) and `span_mask` [T] (True inside the span)."""

  def fn(ex, rng):
    del rng
    t0, t1 = (int(v) for v in ex["span"])
    num_frames = ex["video"].shape[0]
    ex.update(query=_tokens(handle, [str(ex["span_query"])], max_len)[0],
              query_string=str(ex["span_query"]), span=np.array([t0, t1], np.int32),
              span_mask=(np.arange(num_frames) >= t0) & (np.arange(num_frames) < t1))
    return ex
  return fn


video_span.text_field = "span_query"
