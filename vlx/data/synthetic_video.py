"""TFDS builder for synthetic video-text data (ArrayRecord), rendered by `video_render`.

Only `Tensor` features, so building needs no TensorFlow. Shuffling is disabled: records stay
in generation order, in units of two (records 2k, 2k + 1: a temporal video and its twin —
the same frames in another order — or two static videos); the twin's index is stored as
`twin` too (-1 for static videos).
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from vlx.data import video_render as V

_DESCRIPTION = """Videos of coloured shapes whose captions need time: every temporal video
(direction of motion, order of events, number of colour changes, grows/shrinks,
enters/leaves) has a twin with the same frames in another order and other captions; static
videos (colour, shape, count) are the control. Per video: 5 captions, 3 open-ended questions,
a multiple-choice question, a grounding span [t0, t1) with its query, and a caption per frame
(its shapes and where each is: what a still frame shows)."""


class SyntheticVideoConfig(tfds.core.BuilderConfig):

  def __init__(self, *, image_size=V.IMAGE_SIZE, num_frames=V.NUM_FRAMES, train_size=10_000,
               test_size=1_000, seed=0, **kw):
    super().__init__(**kw)
    V.check_size(image_size, num_frames)
    self.image_size = image_size
    self.num_frames = num_frames
    self.train_size = train_size
    self.test_size = test_size
    self.seed = seed


def _text(shape=()):
  return tfds.features.Tensor(shape=shape, dtype=np.object_)


def _int(shape=()):
  return tfds.features.Tensor(shape=shape, dtype=np.int64)


class SyntheticVideo(tfds.core.GeneratorBasedBuilder):
  """Shape videos with captions, questions, multiple choice and grounding spans."""

  VERSION = tfds.core.Version("1.2.0")
  RELEASE_NOTES = {"1.0.0": "First release.",
                   "1.1.0": "Records in aligned units of two (static videos paired too).",
                   "1.2.0": "Per-frame captions (each named shape and where it is); the same "
                            "videos and text otherwise."}
  BUILDER_CONFIGS = [
      SyntheticVideoConfig(name="default", description="8 x 32px, 10k train / 1k test"),
      SyntheticVideoConfig(name="small", train_size=256, test_size=64,
                           description="for tests and smoke runs"),
      SyntheticVideoConfig(name="default_64px", image_size=64,
                           description="8 x 64px, 10k train / 1k test"),
  ]

  def _info(self):
    c = self.builder_config
    return tfds.core.DatasetInfo(
        builder=self,
        description=_DESCRIPTION,
        disable_shuffling=True,  # twins stay consecutive
        features=tfds.features.FeaturesDict({
            "video": tfds.features.Tensor(
                shape=(c.num_frames, c.image_size, c.image_size, 3), dtype=np.uint8),
            "captions": _text((V.NUM_CAPTIONS,)),
            "kind": _text(),
            "concept": _text(),
            "twin": _int(),
            "label": _int(),
            "questions": _text((V.NUM_QUESTIONS,)),
            "answers": _int((V.NUM_QUESTIONS,)),
            "mc_question": _text(),
            "mc_choices": _text((V.NUM_CHOICES,)),
            "mc_answer": _int(),
            "span": _int((2,)),
            "span_query": _text(),
            "frame_captions": _text((c.num_frames,)),
        }),
        metadata=tfds.core.MetadataDict(class_names=list(V.ACTIONS),
                                        answers=list(V.ANSWERS)),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    c = self.builder_config
    return {"train": self._generate_examples(c.train_size, c.seed),
            "test": self._generate_examples(c.test_size, c.seed + 1)}

  def _generate_examples(self, num, seed):
    c = self.builder_config
    for i, (video, twin) in enumerate(V.videos(num, seed, c.image_size, c.num_frames)):
      yield i, video.record(twin)
