"""OSCAR (Li et al. 2020): UNITER's single stream with object-tag words ("red circle") between
the text and the regions, as segment 1. The tags come from the scene's annotations here,
standing in for a detector's labels.

  python -m vlx.main --config=configs/oscar.py:tiny --workdir=workdirs/oscar_tiny
  :tiny,blind   the question-only baseline, trained the same way (image and boxes blanked)
  :tiny,smoke   a few steps on the small variant, for tests

The shared recipe is vlx/presets/fusion.py; results: docs/fusion.md.
"""

from vlx.presets import fusion
from vlx.variant import parse_variant


def get_config(arg: str = "tiny"):
  variant = parse_variant(arg, sizes=("tiny",), words=("blind",), keys=("ft",))
  return fusion.scene_tasks_config(
      variant, stack="single_stream", visual="regions", use_tags=True,
      depths=dict(text_depth=3),
      # Eight tag tokens lengthen every fused sequence: 650 steps keep it in the CPU budget.
      steps=650)
