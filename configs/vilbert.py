"""ViLBERT (Lu et al. 2019): a text stream and a region stream whose co-attention layers swap
keys and values (each side's queries attend to the other side), each followed by a
standard transformer layer per stream.

  python -m vlx.main --config=configs/vilbert.py:tiny --workdir=workdirs/vilbert_tiny
  :tiny,blind   the question-only baseline, trained the same way (image and boxes blanked)
  :tiny,smoke   a few steps on the small variant, for tests

The shared recipe is vlx/presets/fusion.py; results: docs/fusion.md.
"""

from vlx.presets import fusion
from vlx.variant import parse_variant


def get_config(arg: str = "tiny"):
  variant = parse_variant(arg, sizes=("tiny",), words=("blind",), keys=("ft",))
  return fusion.scene_tasks_config(
      variant, stack="co_attention", visual="regions", use_tags=False,
      depths=dict(text_depth=2, visual_depth=1, fusion_depth=1))
