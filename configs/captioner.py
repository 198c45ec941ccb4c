"""A plain image captioner (encoder-decoder, captioning loss only): CoCa's code with the
contrastive loss switched off, as in SimVLM / CoCa's ablations."""

from vlx.configs import coca_config


def get_config(arg: str = "tiny"):
  return coca_config(arg, contrastive_weight=0.0, caption_weight=1.0)
