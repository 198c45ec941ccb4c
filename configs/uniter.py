"""UNITER (Chen et al. 2020): one transformer over words and image regions. Regions are
ROI-aligned from the ViT feature map at the scene's boxes (plus a whole-image region), with
box geometry embedded. Trained on ITC, ITM with hard negatives, MLM, masked-region
modelling (class and feature regression), VQA and grounding.

  python -m vlx.main --config=configs/uniter.py:tiny --workdir=workdirs/uniter_tiny
  :tiny,blind   the question-only baseline, trained the same way (image and boxes blanked)
  :tiny,smoke   a few steps on the small variant, for tests

The shared recipe is vlx/presets/fusion.py; results: docs/fusion.md.
"""

from vlx.presets import fusion
from vlx.variant import parse_variant


def get_config(arg: str = "tiny"):
  variant = parse_variant(arg, sizes=("tiny",), words=("blind",), keys=("ft",))
  return fusion.scene_tasks_config(
      variant, stack="single_stream", visual="regions", use_tags=False,
      depths=dict(text_depth=3))
