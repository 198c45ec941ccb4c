"""ALIGN (Jia et al. 2021): normalized softmax with label smoothing, bidirectional text
encoder pooled at its first token (BERT-style), learnable temperature.

The CPU `tiny` variant (1,000 steps) uses a causal EOT-pooled text tower instead: it
measured zero-shot 0.72 vs 0.52 for first-token pooling at this scale (see README).

Variants: tiny (CPU, synthetic shapes), s32, b32, b16, l14 (accelerators, coco_captions);
ft=DIR / lit=DIR fine-tune an imported checkpoint (see configs/clip.py); ',smoke' shrinks
any of them to a seconds-long run."""

from vlx.configs import FINETUNE_KEYS, dual_encoder_config, finetune_config, parse_variant


def get_config(arg: str = "tiny"):
  variant = parse_variant(arg, keys=FINETUNE_KEYS)
  if variant.values:  # ft=DIR or lit=DIR: start from an imported checkpoint (vlx.convert)
    return finetune_config(arg)
  c = dual_encoder_config(variant, objective="align",
                          objective_kwargs=dict(label_smoothing=0.1, max_scale=100.0),
                          text_causal=False, text_pool="first", temperature_init=1 / 0.05)
  if variant.size == "tiny":
    c.model.text.update(dict(causal=True, pool="eot"))
  return c
