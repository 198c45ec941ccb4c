"""Fine-tuning an imported image-text checkpoint (`ft=DIR` / `lit=DIR` in the dual-encoder
configs): the model, tokenizer, image size and preprocessing come from DIR."""

from __future__ import annotations

import os

import ml_collections

from vlx.presets import base, sizes
from vlx.variant import parse_variant

FINETUNE_KEYS = ("ft", "lit")  # full fine-tune / locked image tower (LiT)


def read_converted(path: str, where: str) -> dict:
  """The metadata of a converted checkpoint directory (`python -m vlx.convert --out=DIR`) that
  ships its tokenizer, or one line naming `where` (the variant key that gave the path)."""
  from vlx import convert  # pylint: disable=g-import-not-at-top
  if not os.path.exists(os.path.join(path, convert.PRETRAINED_JSON)):
    raise ValueError(f"{where}: no {convert.PRETRAINED_JSON}; convert the checkpoint first "
                     "with python -m vlx.convert --src=... --out=DIR")
  meta = convert.read_meta(path)
  if not meta.get("tokenizer"):
    raise ValueError(f"{where}: the imported checkpoint has no tokenizer files")
  return meta


def read_paligemma(path: str, config: str, why_locations: str):
  """A converted PaliGemma for `config`'s `ft=DIR`: (absolute DIR, its metadata, its
  `<loc0000>` id, its decoder's vocabulary size), or one line on what DIR is not."""
  path = os.path.abspath(os.path.expanduser(path))
  meta = read_converted(path, f"ft={path}")
  if meta["family"] != "paligemma":
    raise ValueError(f"ft={path}: a {meta['family']} checkpoint; {config} fine-tunes a "
                     "converted PaliGemma (the dual encoders have their own ft=DIR)")
  loc_start = meta["facts"].get("loc_start")
  if loc_start is None:
    raise ValueError(f"ft={path}: the decoder has no location tokens (its vocabulary ends "
                     f"before <loc1023>), {why_locations}")
  return path, meta, int(loc_start), int(meta["model"]["decoder"]["vocab_size"])


def preprocess_op(pp: dict, op: str = "preprocess_image") -> str:
  """The pp op that prepares pixels as a converted checkpoint expects (`preprocess_image`, or
  `preprocess_video` frame by frame), from its metadata's `preprocess`."""
  return (f"{op}({pp['resize']},{pp['resize_mode']!r},{pp['crop']!r},"
          f"{tuple(pp['mean'])!r},{tuple(pp['std'])!r},{pp['resample']!r},"
          f"{pp.get('crop_rounding', 'floor')!r})")


def finetune_config(arg: str) -> ml_collections.ConfigDict:
  """Fine-tune an imported checkpoint (`python -m vlx.convert --out=DIR`) on the embedded data.

  `arg`: 'ft=DIR' (full fine-tune) or 'lit=DIR' (locked image tower, LiT: Zhai et al. 2022),
  optionally ',smoke'. The model, tokenizer, image size and preprocessing all come from DIR;
  the objective follows the checkpoint (sigmoid when it has SigLIP's bias, softmax otherwise).
  Point `data` elsewhere with the usual overrides (e.g. `--config.data.name=tfds`).
  """
  variant = parse_variant(arg, sizes=sizes.SIZES, keys=FINETUNE_KEYS)
  smoke = variant.smoke
  if len(variant.values) != 1 or variant.size_given:
    raise ValueError(f"fine-tune variant {arg!r}: expected one of 'ft=DIR' or 'lit=DIR' "
                     "(+ ',smoke'); the size comes from DIR")
  (mode, path), = variant.values.items()
  path = os.path.abspath(os.path.expanduser(path))
  meta = read_converted(path, path)
  pp = meta["preprocess"]
  image_op = preprocess_op(pp)
  size, max_len = meta["image_size"], meta["max_len"]
  c = base.base_config()
  c.init_from = path
  c.model = ml_collections.ConfigDict(meta["model"])
  c.data = ml_collections.ConfigDict(dict(
      name="synthetic_shapes", source=dict(data_dir="", variant="default", vocab_size=256),
      train_split="train", test_split="test", image_size=size, max_len=max_len,
      tokenizer=meta["tokenizer"], pretrained_preprocess=pp,
      pp_train=f"decode|{image_op}|sample_caption|tokenize({max_len})",
      pp_eval=f"decode|{image_op}", num_threads=2, prefetch=4))
  sigmoid = meta["model"].get("bias_init") is not None
  c.objectives = ml_collections.ConfigDict(
      {"siglip": dict(weight=1.0)} if sigmoid else {"clip": dict(weight=1.0, max_scale=100.0)})
  c.evals = ml_collections.ConfigDict(dict(
      zeroshot=dict(type="zeroshot", attributes=dict(colour=0, shape=1)),
      retrieval=dict(type="retrieval"),
      linear_probe=dict(type="linear_probe", shots=(1, 5, 10))))
  c.batch_size, c.total_steps = 64, 500
  c.optimizer.update(dict(lr=1e-5, warmup_steps=50, weight_decay=0.1))
  if mode == "lit":  # the image tower and its projection stay exactly as imported
    c.optimizer.param_groups = (("img/.*", 0.0), ("img_proj/.*", 0.0))
    c.optimizer.lr = 1e-4
  if smoke:
    c.data.source.variant = "small"
    base.smoke_schedule(c)
    c.evals.linear_probe.update(dict(shots=(1, 2), pool=256))
  return c
