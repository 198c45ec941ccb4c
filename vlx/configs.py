"""Shared config builders; `configs/<family>.py` files pick a family's pieces from here."""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence, Tuple, Union

import ml_collections

# Literature sizes (ViT, Dosovitskiy et al.; text towers as in CLIP, Radford et al.).
VIT_SIZES = {
    "tiny": dict(patch_size=8, width=128, depth=4, num_heads=4),
    "s32": dict(patch_size=32, width=384, depth=12, num_heads=6),
    "b32": dict(patch_size=32, width=768, depth=12, num_heads=12),
    "b16": dict(patch_size=16, width=768, depth=12, num_heads=12),
    "l14": dict(patch_size=14, width=1024, depth=24, num_heads=16),
}
TEXT_SIZES = {
    "tiny": dict(width=128, depth=3, num_heads=4),
    "s32": dict(width=384, depth=12, num_heads=6),
    "b32": dict(width=512, depth=12, num_heads=8),
    "b16": dict(width=512, depth=12, num_heads=8),
    "l14": dict(width=768, depth=12, num_heads=12),
}
EMBED_DIM = {"tiny": 128, "s32": 384, "b32": 512, "b16": 512, "l14": 768}
IMAGE_SIZE = {"tiny": 64, "s32": 224, "b32": 224, "b16": 224, "l14": 224}


SMOKE_WORDS = ("smoke", "runlocal")  # big_vision's name for it, too
FINETUNE_KEYS = ("ft", "lit")  # clip / siglip / align: start from an imported checkpoint


class UnknownVariantError(ValueError):
  """A variant word no config knows; `valid` lists the words this config takes."""

  def __init__(self, message: str, valid: Sequence[str]):
    super().__init__(message)
    self.valid = tuple(valid)


@dataclasses.dataclass(frozen=True)
class Variant:
  """A parsed `configs/<family>.py:<variant>` argument, e.g. 'b16,smoke' or 'ft=DIR,smoke'.

  `words` holds the config-specific flags present ('blind'); `values` the config-specific
  `key=value` parts present ({'ft': DIR}). `size_given` tells a default size from a named one.
  """
  size: str = "tiny"
  smoke: bool = False
  words: frozenset = frozenset()
  values: Mapping[str, str] = dataclasses.field(default_factory=dict)
  size_given: bool = False


def parse_variant(arg: Union[str, "Variant", None], *, sizes: Sequence[str] = tuple(VIT_SIZES),
                  words: Sequence[str] = (), keys: Sequence[str] = ()) -> Variant:
  """The one variant parser of every config: each comma-separated part must be a size, a smoke
  word, one of the config's `words` or a `key=value` with one of its `keys`; anything else is
  a ValueError naming the part and every valid word (a typo must not run the default)."""
  if isinstance(arg, Variant):
    return arg
  valid = [*sizes, *SMOKE_WORDS, *words, *(f"{k}=DIR" for k in keys)]

  def fail(problem):
    raise UnknownVariantError(f"{problem}; valid variant words: {', '.join(valid)}", valid)

  size, smoke, flags, values = None, False, set(), {}
  for part in (p.strip() for p in (arg or "").split(",")):
    if not part:
      continue
    key, eq, value = part.partition("=")
    if eq:
      if key not in keys:
        fail(f"unknown variant word {part!r}")
      if not value:
        fail(f"variant word {part!r} needs a value ({key}=DIR)")
      if key in values:
        fail(f"variant word {key}= given twice")
      values[key] = value
    elif part in sizes:
      if size is not None and size != part:
        fail(f"two sizes in one variant: {size!r} and {part!r}")
      size = part
    elif part in SMOKE_WORDS:
      smoke = True
    elif part in words:
      flags.add(part)
    else:
      fail(f"unknown variant word {part!r}")
  return Variant(size=size or sizes[0], smoke=smoke, words=frozenset(flags), values=values,
                 size_given=size is not None)


def parse_arg(arg) -> Tuple[str, bool]:
  """'tiny' | 'b16' | 'tiny,smoke' | 'smoke' -> (size, smoke) (see `parse_variant`)."""
  variant = parse_variant(arg)
  return variant.size, variant.smoke


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.total_steps = 1000
  c.batch_size = 128
  c.accum_steps = 1
  c.log_every = 50
  c.eval_every = 1000
  c.checkpoint_every = 500
  c.keep_checkpoints = 3
  c.resume_step = 0  # 0: the newest checkpoint; N: checkpoint N, later ones moved aside
  c.eval_batch_size = 256
  c.init_from = ""
  c.curriculum = ml_collections.ConfigDict()  # {name: kwargs}, see vlx/train/curriculum.py
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  c.sharding = ml_collections.ConfigDict(dict(rules=()))  # () -> vlx.parallel.mesh.DEFAULT_RULES
  c.distributed = ml_collections.ConfigDict(dict(
      enabled=False, coordinator_address="", num_processes=1, process_id=0, cpu_collectives=""))
  c.optimizer = ml_collections.ConfigDict(dict(
      name="adamw", lr=1e-3, b1=0.9, b2=0.98, eps=1e-6, weight_decay=0.1,
      weight_decay_regex=r"(kernel|embedding)$", clip_norm=1.0, schedule="cosine",
      warmup_steps=100, end_lr_frac=0.0, param_groups=()))
  return c


def dual_encoder_config(arg: Union[str, Variant], *, objective: str, objective_kwargs=None,
                        text_causal=True, text_pool="eot", img_pool="gap",
                        temperature_init=1 / 0.07, bias_init=None) -> ml_collections.ConfigDict:
  size, smoke = parse_arg(arg)
  c = base_config()
  c.data = ml_collections.ConfigDict(dict(
      name="synthetic_shapes", source=dict(data_dir="", variant="default", vocab_size=256),
      train_split="train", test_split="test", image_size=IMAGE_SIZE[size], max_len=32,
      pp_train="decode|value_range(-1,1)|sample_caption|tokenize(32)",
      pp_eval="decode|value_range(-1,1)",
      num_threads=2, prefetch=4))
  c.model = ml_collections.ConfigDict(dict(
      name="two_tower", embed_dim=EMBED_DIM[size], temperature_init=temperature_init,
      bias_init=bias_init, dtype="float32",
      image=dict(**VIT_SIZES[size], mlp_ratio=4.0, pool=img_pool, stem="patch",
                 posemb="learn", scan=False, remat="none"),
      text=dict(**TEXT_SIZES[size], vocab_size=256, max_len=32, mlp_ratio=4.0,
                causal=text_causal, pool=text_pool, eos_id=2, scan=False, remat="none")))
  c.objectives = ml_collections.ConfigDict({objective: dict(weight=1.0, **(objective_kwargs or {}))})
  c.evals = ml_collections.ConfigDict(dict(
      zeroshot=dict(type="zeroshot", attributes=dict(colour=0, shape=1)),
      retrieval=dict(type="retrieval"),
      linear_probe=dict(type="linear_probe", shots=(1, 5, 10)),
  ))
  if size == "tiny":
    # The CPU recipe (see README): a convolutional stem and a curriculum that hides colour for
    # the first 40% of steps make the towers learn shape, not only colour, in 1,000 steps.
    c.model.image.stem = "conv"
    c.curriculum = ml_collections.ConfigDict({"grayscale": {"start": 0.0, "end": 0.4}})
    # A quarter of training captions name only the salient object (test captions are
    # untouched): zero-shot prompts describe one object, most scenes hold several.
    c.data.pp_train = "decode|value_range(-1,1)|sample_caption|salient_caption(0.25)|tokenize(32)"
    c.total_steps = 800  # ~11 minutes of 2-core CPU at ~155 examples/s
  else:
    c.data.update(dict(name="tfds", source=dict(tfds_name="coco_captions", data_dir="", vocab_size=32_000),
                       test_split="val",
                       # Aspect kept (CLIP, big_vision): a random resized crop to train
                       # (open_clip's scale 0.9-1: a caption may name anything in the image),
                       # the shorter side to 224 and the centre crop to evaluate.
                       pp_train=("decode|random_resized_crop(224, (0.9, 1.0))|value_range(-1,1)"
                                 "|sample_caption|tokenize(77)"),
                       pp_eval="decode|resize_small(224)|central_crop(224)|value_range(-1,1)",
                       max_len=77))
    del c.data.source["variant"]  # synthetic_shapes' key: TFDS datasets have no variants
    c.model.text.max_len = 77
    c.model.text.vocab_size = 32_000
    c.evals = ml_collections.ConfigDict(dict(retrieval=dict(type="retrieval")))
    c.batch_size = 4096
    c.total_steps = 100_000
    c.optimizer.update(dict(lr=5e-4, warmup_steps=5_000, weight_decay=0.2))
    c.model.dtype = "bfloat16"
    c.model.image.scan = c.model.text.scan = True
    c.model.image.remat = c.model.text.remat = "dots"
    c.mesh.update(dict(data=1, fsdp=-1))
    # At a global batch of 4096 the ring form (vlx/objectives/ring.py): each device holds
    # [B/n, B/n] logit blocks, never the global [B, B] matrix.
    c.objectives[objective].chunked = True
  if smoke and size == "tiny":
    c.data.source.variant = "small"
    c.total_steps = 6
    c.batch_size = 16
    c.log_every = 2
    c.eval_every = 6
    c.checkpoint_every = 3
    c.optimizer.warmup_steps = 2
    c.evals.linear_probe.shots = (1, 2)
    c.evals.linear_probe.pool = 256
  elif smoke:
    shrink_for_smoke(c)
  return c


def shrink_for_smoke(c: ml_collections.ConfigDict) -> None:
  """An accelerator variant in seconds on a CPU: the same data (dataset, pp ops, splits),
  image and patch size, pooling, dtype, scan/remat, mesh, objectives and evaluators, with
  2-layer 64-wide towers, a batch of 16 (8 devices divide it), 4 steps and small evals."""
  for tower in ("image", "text"):
    c.model[tower].update(dict(width=64, num_heads=2))
    depth_keys = [k for k in ("depth", "unimodal_depth", "multimodal_depth") if k in c.model[tower]]
    c.model[tower].update({k: 2 if k != "multimodal_depth" else 1 for k in depth_keys})
  c.model.embed_dim = 64
  if "caption_queries" in c.model:
    c.model.caption_queries = 16
  c.update(dict(total_steps=4, batch_size=16, log_every=2, eval_every=4, checkpoint_every=2,
                eval_batch_size=16))
  c.optimizer.warmup_steps = 1
  for name in c.evals:
    if "limit" in c.evals[name] or c.evals[name].get("type", name) == "retrieval":
      c.evals[name].limit = 32


# CoCa's multimodal (captioning) layers per size; the unimodal layers are TEXT_SIZES' depth.
COCA_MULTIMODAL_DEPTH = {"tiny": 2, "s32": 6, "b32": 12, "b16": 12, "l14": 12}


def coca_config(arg: str, *, contrastive_weight: float = 1.0,
                caption_weight: float = 2.0) -> ml_collections.ConfigDict:
  """CoCa on the dual encoders' data, mesh and optimizer; `contrastive_weight=0` gives
  the plain captioner (encoder-decoder, captioning loss only)."""
  size, smoke = parse_arg(arg)
  c = dual_encoder_config(arg, objective="clip", objective_kwargs=dict(max_scale=100.0))
  text = dict(c.model.text)
  c.model = ml_collections.ConfigDict(dict(
      name="coca", embed_dim=c.model.embed_dim, temperature_init=1 / 0.07, dtype=c.model.dtype,
      caption_queries=32 if size == "tiny" else 256, contrastive_pool="map",
      image=dict(c.model.image),
      text=dict(vocab_size=text["vocab_size"], max_len=text["max_len"], width=text["width"],
                num_heads=text["num_heads"], mlp_ratio=text["mlp_ratio"],
                unimodal_depth=text["depth"], multimodal_depth=COCA_MULTIMODAL_DEPTH[size],
                eos_id=2, scan=text["scan"], remat=text["remat"])))
  c.objectives = ml_collections.ConfigDict(dict(
      clip=dict(weight=contrastive_weight, max_scale=100.0, chunked=size != "tiny"),  # ring
      captioning=dict(weight=caption_weight, label_smoothing=0.0)))
  if not contrastive_weight:
    del c.objectives["clip"]
    c.evals = ml_collections.ConfigDict()
  c.evals.captioning = ml_collections.ConfigDict(dict(
      type="captioning", methods=("greedy", "beam"), beam_size=4, length_penalty=0.6,
      max_len=c.data.max_len, gallery=16, limit=None))
  if size == "tiny":
    # The CPU recipe, measured (README): mean-pooled image tokens for the contrastive
    # embedding (the MAP pooler left shape zero-shot at 0.78 in 800 steps; GAP reaches 0.997
    # in 600), equal loss weights, and 600 steps to fit 20 minutes of a 2-core CPU.
    c.model.contrastive_pool = "gap"
    if not smoke:
      c.total_steps = 600
    if contrastive_weight:
      c.objectives.captioning.weight = 1.0
  if smoke:  # seconds, not minutes: one decoding method, no Java scorers
    c.evals.captioning.update(dict(limit=32, methods=("greedy",), meteor=False, spice=False))
    if size != "tiny":  # CoCa's own layers (multimodal, caption queries) shrink too
      shrink_for_smoke(c)
  return c


def finetune_config(arg: str) -> ml_collections.ConfigDict:
  """Fine-tune an imported checkpoint (`python -m vlx.convert --out=DIR`) on the embedded data.

  `arg`: 'ft=DIR' (full fine-tune) or 'lit=DIR' (locked image tower, LiT: Zhai et al. 2022),
  optionally ',smoke'. The model, tokenizer, image size and preprocessing all come from DIR;
  the objective follows the checkpoint (sigmoid when it has SigLIP's bias, softmax otherwise).
  Point `data` elsewhere with the usual overrides (e.g. `--config.data.name=tfds`).
  """
  import os  # pylint: disable=g-import-not-at-top
  from vlx import convert  # pylint: disable=g-import-not-at-top
  variant = parse_variant(arg, keys=FINETUNE_KEYS)
  smoke = variant.smoke
  if len(variant.values) != 1 or variant.size_given:
    raise ValueError(f"fine-tune variant {arg!r}: expected one of 'ft=DIR' or 'lit=DIR' "
                     "(+ ',smoke'); the size comes from DIR")
  (mode, path), = variant.values.items()
  path = os.path.abspath(os.path.expanduser(path))
  if not os.path.exists(os.path.join(path, convert.PRETRAINED_JSON)):
    raise ValueError(f"{path}: no {convert.PRETRAINED_JSON}; convert the checkpoint first "
                            "with python -m vlx.convert --src=... --out=DIR")
  meta = convert.read_meta(path)
  if not meta.get("tokenizer"):
    raise ValueError(f"{path}: the imported checkpoint has no tokenizer files")
  pp = meta["preprocess"]
  image_op = (f"preprocess_image({pp['resize']},{pp['resize_mode']!r},{pp['crop']!r},"
              f"{tuple(pp['mean'])!r},{tuple(pp['std'])!r},{pp['resample']!r},"
              f"{pp.get('crop_rounding', 'floor')!r})")
  size, max_len = meta["image_size"], meta["max_len"]
  c = base_config()
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
    c.update(dict(total_steps=4, batch_size=16, log_every=2, eval_every=4, checkpoint_every=2))
    c.optimizer.warmup_steps = 1
    c.evals.linear_probe.update(dict(shots=(1, 2), pool=256))
  return c


# The five fusion encoders: which stack, which visual tokens, which of its layers where.
FUSION_FAMILIES = {
    # ALBEF (Li et al. 2021): ViT patches, text encoder, cross-attention fusion, EMA teacher.
    # Its fusion passes cross-attend to 64 patch tokens (the others to 4 regions) and its EMA
    # teacher runs a second forward: 650 steps fit the CPU budget where the others take 700.
    # Fixed 2-D sin-cos position embeddings (big_vision's default) and 650 steps took VQA
    # from 0.682 (learned ones, 600 steps) to 0.713, mostly on shape and colour questions;
    # 1 text + 3 fusion layers instead of 2 + 2 gave 0.687 for 11% more time.
    "albef": dict(stack="albef", visual="patches", use_tags=False, steps=650,
                  posemb="sincos2d",
                  depths=dict(text_depth=2, visual_depth=0, fusion_depth=2)),
    # UNITER (Chen et al. 2020): one stream over words and regions with geometry.
    "uniter": dict(stack="single_stream", visual="regions", use_tags=False,
                   depths=dict(text_depth=3)),
    # OSCAR (Li et al. 2020): UNITER's stream with object-tag words between text and regions.
    # Its eight tag tokens lengthen every fused sequence: 650 steps keep it within 15 minutes
    # (700 took 15.1).
    "oscar": dict(stack="single_stream", visual="regions", use_tags=True, steps=650,
                  depths=dict(text_depth=3)),
    # ViLBERT (Lu et al. 2019): two streams, co-attention layers.
    "vilbert": dict(stack="co_attention", visual="regions", use_tags=False,
                    depths=dict(text_depth=2, visual_depth=1, fusion_depth=1)),
    # LXMERT (Tan & Bansal 2019): language, object-relationship and cross-modality encoders.
    # One cross-modality layer, not two: with two, masked-word accuracy stayed at ~0.2 for
    # all 700 steps (VQA 0.713, t2i ITM+ITC R@1 0.766 < ITC's 0.785), and unsharing the
    # cross-attention or halving the LR did not help by step 300; with one it leaves that
    # plateau by step 200 (0.59 at 300, 0.85 at 700), VQA 0.830, in 8.9 minutes.
    "lxmert": dict(stack="lxmert", visual="regions", use_tags=False,
                   depths=dict(text_depth=2, visual_depth=1, fusion_depth=1)),
}


def fusion_config(family: str, arg: str = "tiny") -> ml_collections.ConfigDict:
  """A fusion encoder trained on captions, questions and referring expressions at once.

  Variants: 'tiny' (CPU, the synthetic scenes' questions and expressions), ',smoke',
  ',blind' (the question-only baseline: the same model and training with the image and
  boxes blanked), 'ft=DIR' (start from an LXMERT / VisualBERT that `python -m vlx.convert`
  wrote to DIR; vlx/convert/hf_fusion.py says what loads where). Larger sizes need real VQA /
  RefCOCO data and are not defined yet.
  """
  # Only the 'tiny' size is defined so far: larger ones need real VQA / RefCOCO data.
  variant = parse_variant(arg, sizes=("tiny",), words=("blind",), keys=("ft",))
  blind, smoke = "blind" in variant.words, variant.smoke
  fam = FUSION_FAMILIES[family]
  c = base_config()
  # Lengths cover every caption (28 tokens with EOS), question (18), expression (10) and tag
  # list (7) of the scenes: padding is compute that every pass of the step would pay for.
  tags = "|scene_tags(8)" if fam["use_tags"] else ""
  # Caption (ITC/ITM/MLM), candidate boxes + an expression (grounding, and the regions of
  # every pass), a question (VQA): one example carries all three.
  c.data = ml_collections.ConfigDict(dict(
      name="synthetic_shapes", source=dict(data_dir="", variant="default", vocab_size=256),
      train_split="train", test_split="test", image_size=64, max_len=28,
      # Three questions per training image: VQA supervision for the cost of fusion passes.
      pp_train=("decode|value_range(-1,1)|sample_caption|tokenize(28)|scene_refer(12, 0.1)"
                f"|scene_vqa(18, None, 3){tags}"),
      pp_eval=("decode|value_range(-1,1)|first_caption|tokenize(28)|scene_refer(12)"
               f"|scene_vqa(18){tags}"),
      keys=("image", "text", "boxes", "box_mask", "box_labels", "target", "question",
            "answer_scores", "expression") + (("tags",) if fam["use_tags"] else ()),
      num_threads=2, prefetch=4))
  c.model = ml_collections.ConfigDict(dict(
      name="fusion", stack=fam["stack"], visual=fam["visual"], use_tags=fam["use_tags"],
      roi_size=2, embed_dim=128, temperature_init=1 / 0.07, blind=blind, dtype="float32",
      num_answers=21, num_region_classes=32, mlm_prob=0.15, mrm_prob=0.15,
      tasks=("itc", "itm", "mlm", "vqa", "refer") + (("mrm",) if fam["visual"] == "regions"
                                                      else ()),
      image=dict(VIT_SIZES["tiny"], mlp_ratio=4.0, pool="gap", stem="conv",
                 posemb=fam.get("posemb", "learn")),
      text=dict(vocab_size=256, max_len=28, eos_id=2),
      fusion=dict(width=128, num_heads=4, mlp_dim=512, max_len=40,
                  **{"text_depth": 2, "visual_depth": 0, "fusion_depth": 2, **fam["depths"]})))
  c.objectives = ml_collections.ConfigDict(dict(
      itc=dict(weight=1.0), itm=dict(weight=1.0), mlm=dict(weight=1.0), vqa=dict(weight=2.0),
      refer=dict(weight=1.0)))
  if fam["visual"] == "regions":
    c.objectives.mrm = dict(weight=1.0, class_weight=1.0, feature_weight=1.0)
  c.ema = ml_collections.ConfigDict(dict(decay=0.0, teacher_method="momentum_outputs"))
  if family == "albef":  # momentum distillation on ITC and MLM (ALBEF's alpha = 0.4)
    c.ema.decay = 0.995
    c.objectives.itc.distill_alpha = 0.4
    c.objectives.mlm.distill_alpha = 0.4
  c.evals = ml_collections.ConfigDict(dict(
      vqa=dict(type="vqa", limit=1024), grounding=dict(type="grounding", limit=1024),
      itm_retrieval=dict(type="itm_retrieval", limit=256, k=8)))
  # The CPU budget: each family trains and evaluates within 15 minutes of a 2-core CPU.
  c.batch_size = 64
  c.total_steps = fam.get("steps", 700)
  c.log_every = 50
  c.eval_every = c.total_steps
  c.checkpoint_every = c.total_steps // 2
  c.eval_batch_size = 256
  c.optimizer.update(dict(lr=1e-3, warmup_steps=c.total_steps // 10, weight_decay=0.01,
                         b2=0.999))
  if smoke:
    c.data.source.variant = "small"
    c.update(dict(total_steps=4, batch_size=16, log_every=2, eval_every=4, checkpoint_every=2))
    c.optimizer.warmup_steps = 1
    for name in c.evals:
      c.evals[name].limit = 32
  if "ft" in variant.values:  # ft=DIR: start from an imported LXMERT / VisualBERT
    from vlx.convert import hf_fusion  # pylint: disable=g-import-not-at-top
    hf_fusion.finetune_from(c, fam["stack"], variant.values["ft"])
  return c
