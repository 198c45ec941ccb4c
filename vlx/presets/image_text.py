"""Image-text sections shared by the dual-encoder and captioning configs: the two towers at a
literature size, the embedded synthetic data, COCO captions in its real TFDS format, and the
evaluations that the synthetic scenes support."""

from __future__ import annotations

import ml_collections

from vlx.presets import sizes


def image_tower(size: str, *, pool: str = "gap", stem: str = "patch") -> dict:
  return dict(**sizes.VIT[size], mlp_ratio=4.0, pool=pool, stem=stem, posemb="learn",
              scan=False, remat="none")


def text_tower(size: str, *, causal: bool, pool: str, vocab_size: int = 256,
               max_len: int = 32) -> dict:
  return dict(**sizes.TEXT[size], vocab_size=vocab_size, max_len=max_len, mlp_ratio=4.0,
              causal=causal, pool=pool, eos_id=2, scan=False, remat="none")


def synthetic_shapes(*, image_size: int = 64, max_len: int = 32, pp_train: str,
                     pp_eval: str = "decode|value_range(-1,1)") -> ml_collections.ConfigDict:
  """vlx's embedded dataset (generated on first use): captioned scenes of coloured shapes."""
  return ml_collections.ConfigDict(dict(
      name="synthetic_shapes", source=dict(data_dir="", variant="default", vocab_size=256),
      train_split="train", test_split="test", image_size=image_size, max_len=max_len,
      pp_train=pp_train, pp_eval=pp_eval, num_threads=2, prefetch=4))


def coco_captions(*, max_len: int = 77) -> ml_collections.ConfigDict:
  """COCO captions from TFDS (`coco_captions`, evaluated on its val split). The aspect ratio is
  kept, as CLIP and big_vision do: a random resized crop to train (open_clip's scale 0.9-1: a
  caption may name anything in the image), the shorter side to 224 and the centre crop to
  evaluate."""
  return ml_collections.ConfigDict(dict(
      name="tfds", source=dict(tfds_name="coco_captions", data_dir="", vocab_size=32_000),
      train_split="train", test_split="val", image_size=224, max_len=max_len,
      pp_train=("decode|random_resized_crop(224, (0.9, 1.0))|value_range(-1,1)"
                f"|sample_caption|tokenize({max_len})"),
      pp_eval="decode|resize_small(224)|central_crop(224)|value_range(-1,1)",
      num_threads=2, prefetch=4))


def shapes_evals() -> ml_collections.ConfigDict:
  """Zero-shot colour and shape, retrieval both ways, and few-shot linear probes."""
  return ml_collections.ConfigDict(dict(
      zeroshot=dict(type="zeroshot", attributes=dict(colour=0, shape=1)),
      retrieval=dict(type="retrieval"),
      linear_probe=dict(type="linear_probe", shots=(1, 5, 10))))
