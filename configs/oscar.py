"""OSCAR (Li et al. 2020): UNITER's single stream with object-tag words ("red circle") between
the text and the regions, as segment 1. The tags come from the scene's annotations here,
standing in for a detector's labels.

  python -m vlx.main --config=configs/oscar.py:tiny --workdir=workdirs/oscar_tiny
  :tiny,blind   the question-only baseline, trained the same way (image and boxes blanked)
  :tiny,smoke   a few steps on the small variant, for tests

The pieces are in vlx/configs.py (FUSION_FAMILIES, fusion_config).
"""

from vlx.configs import fusion_config


def get_config(arg: str = "tiny"):
  return fusion_config("oscar", arg)
