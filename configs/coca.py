"""CoCa (Yu et al. 2022): contrastive + captioning losses on one image-text model.

Variants as every family: tiny (CPU, synthetic shapes), s32, b32, b16, l14, ',smoke'.
`--config.objectives.clip.weight=0` (or configs/captioner.py) trains a plain captioner.
Decoding for the captioning eval: `--config.evals.captioning.methods=('greedy','beam')`.
"""

from vlx.configs import coca_config


def get_config(arg: str = "tiny"):
  return coca_config(arg)
