"""SigLIP (Zhai et al. 2023): a pairwise sigmoid loss with a learnable temperature (init 10)
and bias (init -10), a bidirectional text tower, an attention-pooling (MAP) image head.
Results and how each was produced: docs/dual_encoder.md.

The CPU `tiny` recipe uses CLIP's causal EOT-pooled text tower, GAP image pooling and a 10x
learning rate on the temperature and bias, which at its step count otherwise barely move
from their init. Variants as in configs/clip.py.
"""

import ml_collections

from vlx.presets import base, image_text, sizes
from vlx.presets.finetune import FINETUNE_KEYS, finetune_config
from vlx.variant import parse_variant


def get_config(arg: str = "tiny"):
  variant = parse_variant(arg, sizes=sizes.SIZES, keys=FINETUNE_KEYS)
  if variant.values:  # ft=DIR or lit=DIR: start from an imported checkpoint
    return finetune_config(arg)
  size = variant.size
  c = base.base_config()
  c.model = ml_collections.ConfigDict(dict(
      name="two_tower", embed_dim=sizes.EMBED_DIM[size], temperature_init=10.0,
      bias_init=-10.0, dtype="float32",
      image=image_text.image_tower(size, pool="map"),
      text=image_text.text_tower(size, causal=False, pool="last")))
  c.objectives = ml_collections.ConfigDict(dict(siglip=dict(weight=1.0)))

  if size == "tiny":  # the CPU recipe: ~11 minutes of a 2-core CPU
    # A quarter of training captions name only the salient object (test captions are
    # untouched): zero-shot prompts describe one object, most scenes hold several.
    c.data = image_text.synthetic_shapes(
        pp_train="decode|value_range(-1,1)|sample_caption|salient_caption(0.25)|tokenize(32)")
    c.evals = image_text.shapes_evals()
    # A convolutional stem, and a curriculum that hides colour for the first 40% of steps,
    # make the towers learn shape, not only colour.
    c.model.image.stem = "conv"
    c.curriculum = ml_collections.ConfigDict({"grayscale": {"start": 0.0, "end": 0.4}})
    c.total_steps = 800
    c.model.text.update(dict(causal=True, pool="eot"))
    c.model.image.pool = "gap"
    c.optimizer.param_groups = (("logit_.*", 10.0),)
  else:  # accelerators, on COCO captions
    image_text.coco_pod_schedule(c)
    c.model.text.update(dict(max_len=77, vocab_size=32_000))
    c.model.dtype = "bfloat16"
    c.model.image.update(dict(scan=True, remat="dots"))
    c.model.text.update(dict(scan=True, remat="dots"))
    # The ring form (vlx/objectives/ring.py): each device holds [B/n, B/n] logit blocks,
    # never the global [B, B] matrix.
    c.objectives.siglip.chunked = True

  if variant.smoke and size == "tiny":
    image_text.shapes_smoke(c)
  elif variant.smoke:
    base.shrink_for_smoke(c)
  return c
