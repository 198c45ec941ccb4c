"""ALBEF (Li et al. 2021, "Align before fuse"): a ViT and a text encoder aligned by an
image-text contrastive loss, then a multimodal encoder whose layers cross-attend to the ViT's
patch tokens; an EMA (momentum) copy of the model gives soft targets that ITC and MLM
distil (alpha 0.4). Trained here on ITC, ITM with hard negatives, MLM, VQA and grounding.

  python -m vlx.main --config=configs/albef.py:tiny --workdir=workdirs/albef_tiny
  :tiny,blind   the question-only baseline, trained the same way (image and boxes blanked)
  :tiny,smoke   a few steps on the small variant, for tests

The pieces are in vlx/configs.py (FUSION_FAMILIES, fusion_config).
"""

from vlx.configs import fusion_config


def get_config(arg: str = "tiny"):
  return fusion_config("albef", arg)
