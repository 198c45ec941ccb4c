"""UNITER (Chen et al. 2020): one transformer over words and image regions. Regions are
ROI-aligned from the ViT feature map at the scene's boxes (plus a whole-image region), with
box geometry embedded. Trained on ITC, ITM with hard negatives, MLM, masked-region
modelling (class and feature regression), VQA and grounding.

  python -m vlx.main --config=configs/uniter.py:tiny --workdir=workdirs/uniter_tiny
  :tiny,blind   the question-only baseline, trained the same way (image and boxes blanked)
  :tiny,smoke   a few steps on the small variant, for tests

The pieces are in vlx/configs.py (FUSION_FAMILIES, fusion_config).
"""

from vlx.configs import fusion_config


def get_config(arg: str = "tiny"):
  return fusion_config("uniter", arg)
