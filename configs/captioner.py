"""A plain captioner (encoder-decoder, captioning loss only): CoCa's recipe (configs/coca.py)
without the contrastive loss and the evaluations that need it. Results: docs/coca.md.

Variants as in configs/coca.py.
"""

import os

from vlx.config_lib import load_config_module


def get_config(arg: str = "tiny"):
  c = load_config_module(os.path.join(os.path.dirname(__file__), "coca.py")).get_config(arg)
  del c.objectives["clip"]
  c.objectives.captioning.weight = 1.0
  for name in list(c.evals):
    if name != "captioning":
      del c.evals[name]
  return c
