"""ALBEF (Li et al. 2021, "Align before fuse"): a ViT and a text encoder aligned by an
image-text contrastive loss, then a multimodal encoder whose layers cross-attend to the ViT's
patch tokens; an EMA (momentum) copy of the model gives soft targets that ITC and MLM
distil (alpha 0.4). Trained here on ITC, ITM with hard negatives, MLM, VQA and grounding.

  python -m vlx.main --config=configs/albef.py:tiny --workdir=workdirs/albef_tiny
  :tiny,blind   the question-only baseline, trained the same way (image and boxes blanked)
  :tiny,smoke   a few steps on the small variant, for tests

The shared recipe is vlx/presets/fusion.py; results: docs/fusion.md.
"""

from vlx.presets import fusion
from vlx.variant import parse_variant


def get_config(arg: str = "tiny"):
  variant = parse_variant(arg, sizes=("tiny",), words=("blind",), keys=("ft",))
  return fusion.scene_tasks_config(
      variant, stack="albef", visual="patches", use_tags=False,
      depths=dict(text_depth=2, visual_depth=0, fusion_depth=2),
      # Fixed 2-D sin-cos position embeddings (big_vision's default) answer shape and colour
      # questions better than learned ones here (docs/fusion.md).
      posemb="sincos2d",
      # The momentum teacher runs a second forward: 650 steps fit the CPU budget.
      steps=650,
      # Momentum distillation on ITC and MLM (ALBEF's alpha = 0.4).
      ema_decay=0.995, distill_alpha=0.4)
