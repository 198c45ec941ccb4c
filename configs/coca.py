"""CoCa (Yu et al. 2022): contrastive + captioning. An image tower, a unimodal text decoder
whose end-of-text token gives the contrastive embedding, and multimodal decoder layers that
cross-attend to attention-pooled image queries for captioning. Results and how each was
produced: docs/coca.md.

Variants: tiny (CPU, the embedded synthetic shapes), s32, b32, b16, l14 (accelerators,
coco_captions); append ',smoke' for a run of seconds. configs/captioner.py is this recipe
without the contrastive loss.
"""

import ml_collections

from vlx.presets import base, image_text, sizes
from vlx.variant import parse_variant

# Multimodal (captioning) decoder layers per size; the unimodal ones are the text tower's depth.
MULTIMODAL_DEPTH = {"tiny": 2, "s32": 6, "b32": 12, "b16": 12, "l14": 12}


def get_config(arg: str = "tiny"):
  variant = parse_variant(arg, sizes=sizes.SIZES)
  size = variant.size
  tiny = size == "tiny"
  c = base.base_config()
  text = sizes.TEXT[size]
  c.model = ml_collections.ConfigDict(dict(
      name="coca", embed_dim=sizes.EMBED_DIM[size], temperature_init=1 / 0.07,
      dtype="float32" if tiny else "bfloat16",
      caption_queries=32 if tiny else 256,
      # Mean-pooled image tokens on the CPU: the MAP pooler learned shape more slowly there.
      contrastive_pool="gap" if tiny else "map",
      image=image_text.image_tower(size, pool="gap", stem="conv" if tiny else "patch"),
      text=dict(vocab_size=256 if tiny else 32_000, max_len=32 if tiny else 77,
                width=text["width"], num_heads=text["num_heads"], mlp_ratio=4.0,
                unimodal_depth=text["depth"], multimodal_depth=MULTIMODAL_DEPTH[size], eos_id=2,
                scan=not tiny, remat="none" if tiny else "dots")))
  c.model.image.update(dict(scan=not tiny, remat="none" if tiny else "dots"))
  c.objectives = ml_collections.ConfigDict(dict(
      clip=dict(weight=1.0, max_scale=100.0, chunked=not tiny),  # chunked: the ring form
      captioning=dict(weight=1.0 if tiny else 2.0, label_smoothing=0.0)))

  if tiny:  # the CPU recipe: ~20 minutes of a 2-core CPU
    c.data = image_text.synthetic_shapes(
        pp_train="decode|value_range(-1,1)|sample_caption|salient_caption(0.25)|tokenize(32)")
    c.evals = image_text.shapes_evals()
    c.curriculum = ml_collections.ConfigDict({"grayscale": {"start": 0.0, "end": 0.4}})
    c.total_steps = 600
  else:  # accelerators, on COCO captions
    image_text.coco_pod_schedule(c)
  c.evals.captioning = ml_collections.ConfigDict(dict(
      type="captioning", methods=("greedy", "beam"), beam_size=4, length_penalty=0.6,
      max_len=c.data.max_len, gallery=16, limit=None))

  if variant.smoke:  # one decoding method, no Java scorers
    c.evals.captioning.update(dict(limit=32, methods=("greedy",), meteor=False, spice=False))
  if variant.smoke and tiny:
    image_text.shapes_smoke(c)
  elif variant.smoke:
    base.shrink_for_smoke(c)
    c.model.caption_queries = 16
  return c
