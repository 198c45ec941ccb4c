"""ALIGN (Jia et al. 2021): normalized softmax with label smoothing, bidirectional text
encoder pooled at its first token (BERT-style), learnable temperature."""

from vlx.configs import dual_encoder_config


def get_config(arg: str = "tiny"):
  return dual_encoder_config(arg, objective="align",
                             objective_kwargs=dict(label_smoothing=0.1, max_scale=100.0),
                             text_causal=False, text_pool="first", temperature_init=1 / 0.05)
