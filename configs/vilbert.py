"""ViLBERT (Lu et al. 2019): a text stream and a region stream whose co-attention layers swap
keys and values (each side's queries attend to the other side), each followed by a
standard transformer layer per stream.

  python -m vlx.main --config=configs/vilbert.py:tiny --workdir=workdirs/vilbert_tiny
  :tiny,blind   the question-only baseline, trained the same way (image and boxes blanked)
  :tiny,smoke   a few steps on the small variant, for tests

The pieces are in vlx/configs.py (FUSION_FAMILIES, fusion_config).
"""

from vlx.configs import fusion_config


def get_config(arg: str = "tiny"):
  return fusion_config("vilbert", arg)
