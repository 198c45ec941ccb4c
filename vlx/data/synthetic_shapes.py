"""TFDS builder for the embedded default dataset: synthetic shape scenes (ArrayRecord).

Only `Tensor` features, so building needs no TensorFlow; the result is cached and
versioned in the TFDS data dir like any other dataset, and read back with
`tfds.data_source` through grain.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from vlx.data import shapes_render

_DESCRIPTION = """Scenes of one to three coloured shapes (8 colours x 4 shapes) with five
compositional captions each (colour, shape, size, count, relative and absolute position)."""


class SyntheticShapesConfig(tfds.core.BuilderConfig):

  def __init__(self, *, image_size=64, train_size=40_000, test_size=1_024, seed=0, **kw):
    super().__init__(**kw)
    self.image_size = image_size
    self.train_size = train_size
    self.test_size = test_size
    self.seed = seed


class SyntheticShapes(tfds.core.GeneratorBasedBuilder):
  """Coloured-shape scenes with captions, class labels and boxes."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = [
      SyntheticShapesConfig(name="default", description="64px, 40k train / 1,024 test"),
      SyntheticShapesConfig(name="small", train_size=2_048, test_size=256,
                            description="for tests and smoke runs"),
  ]

  def _info(self):
    s = self.builder_config.image_size
    n = shapes_render.MAX_OBJECTS
    return tfds.core.DatasetInfo(
        builder=self,
        description=_DESCRIPTION,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(s, s, 3), dtype=np.uint8),
            "captions": tfds.features.Tensor(shape=(5,), dtype=np.object_),
            "label": tfds.features.Tensor(shape=(), dtype=np.int64),
            "colour": tfds.features.Tensor(shape=(), dtype=np.int64),
            "shape": tfds.features.Tensor(shape=(), dtype=np.int64),
            "num_objects": tfds.features.Tensor(shape=(), dtype=np.int64),
            "boxes": tfds.features.Tensor(shape=(n, 4), dtype=np.float32),
            "object_colours": tfds.features.Tensor(shape=(n,), dtype=np.int64),
            "object_shapes": tfds.features.Tensor(shape=(n,), dtype=np.int64),
        }),
        metadata=tfds.core.MetadataDict(class_names=shapes_render.class_names()),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    c = self.builder_config
    return {"train": self._generate_examples(c.train_size, c.seed),
            "test": self._generate_examples(c.test_size, c.seed + 1)}

  def _generate_examples(self, num, seed):
    rng = np.random.default_rng(seed)
    for i in range(num):
      yield i, shapes_render.scene_example(rng, self.builder_config.image_size)
