"""Image-text sections shared by the dual-encoder and captioning configs: the two towers at a
literature size, the embedded synthetic data, COCO captions in its real TFDS format, and the
evaluations that the synthetic scenes support."""

from __future__ import annotations

import ml_collections

from vlx.presets import base, sizes


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


def coco_pod_schedule(c: ml_collections.ConfigDict) -> None:
  """The accelerator variants' run on COCO captions (CLIP-scale pretraining): a global batch
  of 4096 for 100,000 steps, AdamW at 5e-4 after 5,000 warm-up steps with weight decay 0.2,
  parameters and optimizer state sharded over every device (FSDP), retrieval evaluated."""
  c.data = coco_captions()
  c.evals = ml_collections.ConfigDict(dict(retrieval=dict(type="retrieval")))
  c.batch_size = 4096
  c.total_steps = 100_000
  c.optimizer.update(dict(lr=5e-4, warmup_steps=5_000, weight_decay=0.2))
  c.mesh.update(dict(data=1, fsdp=-1))


def shapes_smoke(c: ml_collections.ConfigDict) -> None:
  """`tiny,smoke`: 6 steps of 16 on the small synthetic set, 1- and 2-shot probes."""
  c.data.source.variant = "small"
  base.smoke_schedule(c, total_steps=6)
  c.optimizer.warmup_steps = 2
  c.evals.linear_probe.update(dict(shots=(1, 2), pool=256))
