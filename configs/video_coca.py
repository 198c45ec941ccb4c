"""Video CoCa (issue 19): CoCa (Yu et al. 2022; configs/coca.py) with a video tower in the
image tower's place - video captioning and video-text contrastive learning in one forward
pass. The tower is configs/vivit.py's ViViT (`model.image.kind`: vivit, timesformer or
frame_mean); the batch carries `video` instead of `image`. Scored by CIDEr (pycocoevalcap,
against each video's five captions), text<->video retrieval and the temporal twins.

Variants: tiny (CPU: the synthetic videos, 8 frames of 32 px, a joint ViViT with 2x8x8
tubelets), b16x2 (accelerators: ViViT-B 2x16x16 at 16 frames of 224 px with CoCa-B's text
decoder, on configs/vivit.py's b16x2 data, MSR-VTT); append ',smoke' for a run of seconds.
Override anything: --config.total_steps=...
"""

import ml_collections

from vlx.presets import base, sizes
from vlx.presets.video import (msrvtt_data, msrvtt_schedule, synthetic_video, video_evals,
                               video_tower)
from vlx.variant import parse_variant

SIZES = ("tiny", "b16x2")
# Multimodal (captioning) decoder layers; the unimodal ones are the text tower's depth.
MULTIMODAL_DEPTH = {"tiny": 2, "b16x2": 12}


def get_config(arg: str = "tiny"):
  variant = parse_variant(arg, sizes=SIZES)
  size = variant.size
  tiny = size == "tiny"
  # The tiny captioner reads the synthetic videos at the default text length (32), not the 24
  # of vivit's tiny contrastive recipe, so its measured CIDEr stays this config's.
  data = synthetic_video() if tiny else msrvtt_data()
  text_size = "tiny" if tiny else "b16"
  text = sizes.TEXT[text_size]
  c = base.base_config()
  c.model = ml_collections.ConfigDict(dict(
      name="coca", embed_dim=sizes.EMBED_DIM[text_size], temperature_init=1 / 0.07,
      dtype="float32" if tiny else "bfloat16",
      caption_queries=32 if tiny else 256,
      contrastive_pool="gap" if tiny else "map",  # as configs/coca.py
      image=video_tower(size, "vivit"),
      text=dict(vocab_size=data.source.vocab_size, max_len=data.max_len,
                width=text["width"], num_heads=text["num_heads"], mlp_ratio=4.0,
                unimodal_depth=text["depth"], multimodal_depth=MULTIMODAL_DEPTH[size], eos_id=2,
                scan=not tiny, remat="none" if tiny else "dots")))
  c.model.image.update(dict(scan=not tiny, remat="none" if tiny else "dots"))
  c.objectives = ml_collections.ConfigDict(dict(
      clip=dict(weight=1.0, max_scale=100.0, chunked=not tiny),
      captioning=dict(weight=1.0 if tiny else 2.0, label_smoothing=0.0)))
  c.data = data
  captioning = dict(type="captioning", methods=("greedy", "beam"), beam_size=4,
                    length_penalty=0.6, max_len=c.data.max_len, gallery=16, limit=None)

  if tiny:  # the CPU recipe
    c.evals = video_evals()
    base.cpu_schedule(c, batch_size=64, total_steps=600)
  else:  # accelerators: configs/vivit.py's b16x2 run
    c.evals = ml_collections.ConfigDict(dict(retrieval=dict(type="video_retrieval", limit=None)))
    msrvtt_schedule(c)
  c.evals.captioning = ml_collections.ConfigDict(captioning)

  if variant.smoke:  # one decoding method, no Java scorers
    c.evals.captioning.update(dict(limit=32, methods=("greedy",), meteor=False, spice=False))
    for name in c.evals:
      c.evals[name].limit = 32
  if variant.smoke and tiny:
    c.data.source.variant = "small"
    base.smoke_schedule(c, total_steps=4)
    c.eval_batch_size = 32
  elif variant.smoke:
    base.shrink_for_smoke(c)
    c.model.caption_queries = 16
  return c
