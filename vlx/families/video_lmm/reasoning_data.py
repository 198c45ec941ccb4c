"""The `reasoning_video` dataset: the reasoning videos as TFDS ArrayRecord splits.

Splits (the realistic split of post-training data): `cot`, a small set with the program's
chain-of-thought traces for SFT; `train`, a larger set the RL stage and the answer-only
baselines read (its records hold traces too, which those stages ignore); `test`, held out,
at least 1,000 questions in `default`. Every split cycles through the four question kinds.
Only `Tensor` features, so building needs no TensorFlow.

`<split>_<R>f` (e.g. `test_16f`, `cot_16f`): that split's questions with each clip read at R
frames instead of 8 (`reasoning_videos.make_example(render_frames=R)`: the same scenes,
answers and traces), for "more frames at test time" (the evaluator's `split`) and for
training at other frame counts (`data.train_split=cot_16f` with `data.num_frames=16`, the
batch's frames); generated on first use, beside the variant's data (its own TFDS config,
`<variant>_<split>_<R>f`), with the variant's tokenizer; `<split>_8f` is `<split>`.
"""

from __future__ import annotations

import os
import re
from typing import Optional

import numpy as np
import tensorflow_datasets as tfds

from vlx import registry
from vlx.data import pp_ops
from vlx.data import video_render as V
from vlx.data.sources import DatasetHandle, _file_lock, default_data_dir, tokenizer_beside
from vlx.families.video_lmm import reasoning_videos as RV

SPLITS = ("cot", "train", "test")
TEXT_FIELDS = ("question", "answer", "thought", "options", "caption")
ANNOTATION_KEYS = ("kind", "question", "answer", "thought", "options", "span", "caption")


class ReasoningVideoConfig(tfds.core.BuilderConfig):

  def __init__(self, *, image_size=V.IMAGE_SIZE, num_frames=V.NUM_FRAMES, cot_size=2_000,
               train_size=8_000, test_size=1_000, seed=0, render_frames=None, only_split=None,
               **kw):
    super().__init__(**kw)
    V.check_size(image_size, num_frames)
    self.image_size, self.num_frames = image_size, num_frames
    self.sizes = {"cot": cot_size, "train": train_size, "test": test_size}
    self.seed = seed
    # Set: only `only_split`, each clip read at this many frames (`<split>_<R>f`).
    self.render_frames, self.only_split = render_frames, only_split

  def frames_stored(self) -> int:
    return self.render_frames or self.num_frames


def _text(shape=()):
  return tfds.features.Tensor(shape=shape, dtype=np.object_)


class ReasoningVideo(tfds.core.GeneratorBasedBuilder):
  """Count / order / direction / span questions on shape videos, with checkable answers."""

  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [
      ReasoningVideoConfig(name="default", description="8 x 32px; 2k CoT / 8k RL / 1k test"),
      ReasoningVideoConfig(name="small", cot_size=128, train_size=256, test_size=64,
                           description="for tests and smoke runs"),
  ]

  def _info(self):
    c = self.builder_config
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        disable_shuffling=True,
        features=tfds.features.FeaturesDict({
            "video": tfds.features.Tensor(
                shape=(c.frames_stored(), c.image_size, c.image_size, 3), dtype=np.uint8),
            "kind": _text(), "question": _text(), "answer": _text(), "thought": _text(),
            "caption": _text(),
            "options": _text((2,)),
            "span": tfds.features.Tensor(shape=(2,), dtype=np.int64),
        }),
        metadata=tfds.core.MetadataDict(kinds=list(RV.KINDS)),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    c = self.builder_config
    # Disjoint seeds per split: no test question is a training question.
    names = (c.only_split,) if c.only_split else SPLITS
    return {name: self._generate_examples(c.sizes[name], c.seed * 10 + i)
            for i, name in enumerate(SPLITS) if name in names}

  def _generate_examples(self, num, seed):
    c = self.builder_config
    for i, ex in enumerate(RV.examples(num, seed, image_size=c.image_size,
                                       num_frames=c.num_frames,
                                       render_frames=c.render_frames)):
      yield i, {"video": ex.frames, "kind": ex.kind, "question": ex.question,
                "answer": ex.answer, "thought": ex.thought, "caption": ex.caption,
                "options": np.array(list(ex.options) or ["", ""], dtype=object),
                "span": np.array(ex.span if ex.span else (-1, -1), np.int64)}


def _texts(source, limit: int = 20_000):
  """Questions, options and whole responses (so the tags become pieces of their own)."""
  for i in range(min(len(source), limit)):
    record = source[i]
    yield pp_ops.to_str(record["question"])
    yield pp_ops.to_str(record["caption"])
    yield from (pp_ops.to_str(o) for o in np.atleast_1d(record["options"]))
    yield (f"<think>{pp_ops.to_str(record['thought'])}</think>"
           f"<answer>{pp_ops.to_str(record['answer'])}</answer>")


_READ_AT = re.compile(rf"({'|'.join(SPLITS)})_([1-9]\d*)f")


def _prepared(config, data_dir: str):
  builder = ReasoningVideo(config=config, data_dir=data_dir, file_format="array_record")
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(verify_ssl=False))
  return builder


def _lock(data_dir: str, name: str):
  return _file_lock(os.path.join(data_dir, f".reasoning_video_{name}.lock"))


class _Splits(dict):
  """cot / train / test, and any `<split>_<R>f` (that split's questions, each clip read at R
  frames), prepared when first asked for (`<split>_8f` is `<split>` itself). Listing the
  splits shows those prepared so far."""

  # What an unknown split's message adds (vlx/data/sources.py).
  also = (", and <split>_<R>f for any of them (its clips read at R >= 1 frames, e.g. "
          "'test_16f'; training on one needs data.num_frames=R)")

  def __init__(self, splits: dict, read_at):
    super().__init__(splits)
    self._read_at = read_at

  def __contains__(self, name) -> bool:
    return dict.__contains__(self, name) or bool(_READ_AT.fullmatch(str(name)))

  def __getitem__(self, name):
    match = _READ_AT.fullmatch(str(name))
    if not dict.__contains__(self, name) and match:
      split, frames = match.group(1), int(match.group(2))
      self[name] = (dict.__getitem__(self, split) if frames == RV.CLIP_FRAMES
                    else self._read_at(split, frames))
    return dict.__getitem__(self, name)

  def get(self, name, default=None):
    return self[name] if name in self else default


@registry.DATASETS.register("reasoning_video")
def reasoning_video(data_dir: Optional[str] = None, variant: str = "default",
                    vocab_size: int = 256, **unused) -> DatasetHandle:
  """Generated into the TFDS data dir on first use, with a tokenizer trained beside it."""
  del unused
  data_dir = default_data_dir(data_dir)
  with _lock(data_dir, variant):
    builder = _prepared(variant, data_dir)
    splits = {s: builder.as_data_source(split=s) for s in SPLITS}
    tokenizer = tokenizer_beside(builder.data_dir, lambda: _texts(splits["cot"]), vocab_size,
                                 TEXT_FIELDS)

  def read_at(split: str, frames: int):
    config = read_at_config(builder.builder_config, split, frames)
    with _lock(data_dir, config.name):
      return _prepared(config, data_dir).as_data_source(split=split)
  return DatasetHandle(splits=_Splits(splits, read_at), tokenizer=tokenizer,
                       image_key="video", captions_key="caption", label_key=None,
                       annotation_keys=ANNOTATION_KEYS)


def read_at_config(config: ReasoningVideoConfig, split: str,
                   frames: int) -> ReasoningVideoConfig:
  """`config`'s `split` alone, its clips read at `frames` frames."""
  sizes = config.sizes
  return ReasoningVideoConfig(
      name=f"{config.name}_{split}_{frames}f", image_size=config.image_size,
      num_frames=config.num_frames, cot_size=sizes["cot"], train_size=sizes["train"],
      test_size=sizes["test"], seed=config.seed, render_frames=frames, only_split=split,
      description=f"{config.name}'s {split} questions, each clip read at {frames} frames")

