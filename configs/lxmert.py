"""LXMERT (Tan & Bansal 2019): a language encoder, an object-relationship encoder over the
regions, and a cross-modality encoder (one shared cross-attention in both directions, then
self-attention and a feed-forward layer per side). Hugging Face `LxmertModel` weights load
into this stack (vlx/convert/hf_fusion.py).

  python -m vlx.main --config=configs/lxmert.py:tiny --workdir=workdirs/lxmert_tiny
  :tiny,blind   the question-only baseline, trained the same way (image and boxes blanked)
  :tiny,smoke   a few steps on the small variant, for tests

The pieces are in vlx/configs.py (FUSION_FAMILIES, fusion_config).
"""

from vlx.configs import fusion_config


def get_config(arg: str = "tiny"):
  return fusion_config("lxmert", arg)
