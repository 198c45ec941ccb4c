"""SigLIP (Zhai et al. 2023): pairwise sigmoid loss with learnable temperature (init 10)
and bias (init -10), bidirectional text tower, attention-pooling (MAP) image head.

The CPU `tiny` variant (1,000 steps) measured better with CLIP's causal EOT-pooled text
tower, GAP image pooling, and 10x learning rate on the temperature and bias, which at
this step count otherwise barely move from their init (see README)."""

from vlx.configs import FINETUNE_KEYS, dual_encoder_config, finetune_config, parse_variant


def get_config(arg: str = "tiny"):
  variant = parse_variant(arg, keys=FINETUNE_KEYS)
  if variant.values:  # ft=DIR or lit=DIR: start from an imported checkpoint (vlx.convert)
    return finetune_config(arg)
  c = dual_encoder_config(variant, objective="siglip", text_causal=False, text_pool="last",
                          img_pool="map", temperature_init=10.0, bias_init=-10.0)
  if variant.size == "tiny":
    c.model.text.update(dict(causal=True, pool="eot"))
    c.model.image.pool = "gap"
    c.optimizer.param_groups = (("logit_.*", 10.0),)
  return c
