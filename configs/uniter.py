"""uniter: see vlx.configs.FUSION_FAMILIES and fusion_config for what it is made of.

`python -m vlx.main --config=configs/uniter.py:tiny` (CPU, the synthetic scenes);
`:tiny,blind` trains the question-only baseline the same way; `:tiny,smoke` runs in seconds.
"""

from vlx.configs import fusion_config


def get_config(arg: str = "tiny"):
  return fusion_config("uniter", arg)
