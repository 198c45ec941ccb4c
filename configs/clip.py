"""CLIP (Radford et al. 2021): softmax contrastive loss, causal text tower pooled at EOT.

Variants: tiny (CPU, synthetic shapes), s32, b32, b16, l14 (accelerators, coco_captions);
ft=DIR / lit=DIR fine-tune (fully / image tower locked) a checkpoint imported with
`python -m vlx.convert --src=... --out=DIR`;
append ',smoke' for a seconds-long run. Override anything: --config.total_steps=...
"""

from vlx.configs import FINETUNE_KEYS, dual_encoder_config, finetune_config, parse_variant


def get_config(arg: str = "tiny"):
  variant = parse_variant(arg, keys=FINETUNE_KEYS)
  if variant.values:  # ft=DIR or lit=DIR: start from an imported checkpoint (vlx.convert)
    return finetune_config(arg)
  return dual_encoder_config(variant, objective="clip", objective_kwargs=dict(max_scale=100.0),
                             text_causal=True, text_pool="eot", temperature_init=1 / 0.07)
