"""The fusion encoders' shared recipe (ALBEF, UNITER, OSCAR, ViLBERT, LXMERT on the synthetic
scenes): captions, questions and referring expressions in one example, trained on ITC, ITM,
MLM, VQA and grounding at once (plus masked-region modelling over regions). Each family's
config names its stack, visual tokens, depths and budget; this builds the rest."""

from __future__ import annotations

from typing import Dict

import ml_collections

from vlx.presets import base, sizes
from vlx.variant import Variant


def scene_tasks_config(variant: Variant, *, stack: str, visual: str, use_tags: bool,
                       depths: Dict[str, int], steps: int = 700, posemb: str = "learn",
                       ema_decay: float = 0.0, distill_alpha: float = 0.0
                       ) -> ml_collections.ConfigDict:
  """A fusion encoder trained on captions, questions and referring expressions at once.

  `stack`: the registered fusion stack; `visual`: "patches" (ViT tokens) or "regions" (ROI
  features at the scene's boxes, plus masked-region modelling); `use_tags`: object-tag words
  (OSCAR); `ema_decay` > 0 keeps a momentum teacher whose soft targets ITC and MLM distil with
  weight `distill_alpha` (ALBEF). Variant words: ',smoke', ',blind' (the question-only
  baseline: the same model and training with the image and boxes blanked), 'ft=DIR' (start from
  an LXMERT / VisualBERT that `python -m vlx.convert` wrote to DIR; vlx/convert/hf_fusion.py
  says what loads where). Only the 'tiny' size is defined: larger ones need real VQA /
  RefCOCO data.
  """
  blind, smoke = "blind" in variant.words, variant.smoke
  c = base.base_config()
  # Lengths cover every caption (28 tokens with EOS), question (18), expression (10) and tag
  # list (7) of the scenes: padding is compute that every pass of the step would pay for.
  tags = "|scene_tags(8)" if use_tags else ""
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
            "answer_scores", "expression") + (("tags",) if use_tags else ()),
      num_threads=2, prefetch=4))
  c.model = ml_collections.ConfigDict(dict(
      name="fusion", stack=stack, visual=visual, use_tags=use_tags,
      roi_size=2, embed_dim=128, temperature_init=1 / 0.07, blind=blind, dtype="float32",
      num_answers=21, num_region_classes=32, mlm_prob=0.15, mrm_prob=0.15,
      tasks=("itc", "itm", "mlm", "vqa", "refer") + (("mrm",) if visual == "regions"
                                                      else ()),
      image=dict(sizes.VIT["tiny"], mlp_ratio=4.0, pool="gap", stem="conv",
                 posemb=posemb),
      text=dict(vocab_size=256, max_len=28, eos_id=2),
      # scan / remat: every layer stack scanned / under a remat policy (fusion/stacks.py).
      fusion=dict(width=128, num_heads=4, mlp_dim=512, max_len=40, scan=False, remat="none",
                  **{"text_depth": 2, "visual_depth": 0, "fusion_depth": 2, **depths})))
  c.objectives = ml_collections.ConfigDict(dict(
      itc=dict(weight=1.0), itm=dict(weight=1.0), mlm=dict(weight=1.0), vqa=dict(weight=2.0),
      refer=dict(weight=1.0)))
  if visual == "regions":
    c.objectives.mrm = dict(weight=1.0, class_weight=1.0, feature_weight=1.0)
  # Masking and hard negatives (and the momentum teacher, ema.decay > 0): the fusion task.
  c.task = "fusion"
  c.ema = ml_collections.ConfigDict(dict(decay=ema_decay))
  if distill_alpha:
    c.objectives.itc.distill_alpha = distill_alpha
    c.objectives.mlm.distill_alpha = distill_alpha
  c.evals = ml_collections.ConfigDict(dict(
      vqa=dict(type="vqa", limit=1024), grounding=dict(type="grounding", limit=1024),
      itm_retrieval=dict(type="itm_retrieval", limit=256, k=8)))
  # The CPU budget: each family trains and evaluates within 15 minutes of a 2-core CPU.
  c.batch_size = 64
  c.total_steps = steps
  c.log_every = 50
  c.eval_every = c.total_steps
  c.checkpoint_every = c.total_steps // 2
  c.eval_batch_size = 256
  c.optimizer.update(dict(lr=1e-3, warmup_steps=c.total_steps // 10, weight_decay=0.01,
                         b2=0.999))
  if smoke:
    c.data.source.variant = "small"
    base.smoke_schedule(c)
    for name in c.evals:
      c.evals[name].limit = 32
  if "ft" in variant.values:  # ft=DIR: start from an imported LXMERT / VisualBERT
    from vlx.convert import hf_fusion  # pylint: disable=g-import-not-at-top
    hf_fusion.finetune_from(c, stack, variant.values["ft"])
  return c
