"""SigLIP (Zhai et al. 2023): pairwise sigmoid loss with learnable temperature (init 10)
and bias (init -10), bidirectional text tower, attention-pooling (MAP) image head."""

from vlx.configs import dual_encoder_config


def get_config(arg: str = "tiny"):
  return dual_encoder_config(arg, objective="siglip", text_causal=False, text_pool="last",
                             img_pool="map", temperature_init=10.0, bias_init=-10.0)
