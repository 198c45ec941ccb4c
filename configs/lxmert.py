"""LXMERT (Tan & Bansal 2019): a language encoder, an object-relationship encoder over the
regions, and a cross-modality encoder (one shared cross-attention in both directions, then
self-attention and a feed-forward layer per side). Hugging Face `LxmertModel` weights load
into this stack (vlx/convert/hf_fusion.py).

  python -m vlx.main --config=configs/lxmert.py:tiny --workdir=workdirs/lxmert_tiny
  :tiny,blind   the question-only baseline, trained the same way (image and boxes blanked)
  :tiny,smoke   a few steps on the small variant, for tests

The shared recipe is vlx/presets/fusion.py; results: docs/fusion.md.
"""

from vlx.presets import fusion
from vlx.variant import parse_variant


def get_config(arg: str = "tiny"):
  variant = parse_variant(arg, sizes=("tiny",), words=("blind",), keys=("ft",))
  return fusion.scene_tasks_config(
      variant, stack="lxmert", visual="regions", use_tags=False,
      # One cross-modality layer, not two: with two, masked-word accuracy stalled (docs/fusion.md).
      depths=dict(text_depth=2, visual_depth=1, fusion_depth=1))
