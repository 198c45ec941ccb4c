"""ViViT video-text (Arnab et al. 2021 towers, CLIP's contrastive loss): a video tower and a
text tower in one embedding space, scored by text<->video retrieval and by the temporal twins
(a video's caption against its twin's: the same frames in another order).

Variants: tiny (CPU: the synthetic videos, 8 frames of 32 px, a factorised ViViT: 2 spatial
layers over each frame's 8x8 patches, 2 temporal layers over the frame tokens), joint (tiny's
recipe with the joint ViViT over 2x8x8 tubelets, the tower configs/videomae.py pretrains),
frame_mean (the same recipe with the per-frame image ViT averaged over frames: the
time-blind control, exactly 0.5 on the twins), b16x2 (accelerators: ViViT-B, 2x16x16
tubelets, 16 frames of 224 px, MSR-VTT video files (dataset `msrvtt`, decoded with PyAV;
point it at the data with --config.data.source.root=DIR), padded frames masked); append
',smoke' for a run of seconds. Override anything: --config.total_steps=...
"""

import ml_collections

from vlx.presets import base, image_text, sizes
from vlx.presets.video import (TINY_MAX_LEN, TINY_POSITIONS, msrvtt_data, msrvtt_schedule,
                               synthetic_video, video_evals, video_tower)
from vlx.variant import parse_variant

SIZES = ("tiny", "b16x2")
WORDS = ("frame_mean", "joint")


def get_config(arg: str = "tiny"):
  variant = parse_variant(arg, sizes=SIZES, words=WORDS)
  size = variant.size
  kind = "frame_mean" if "frame_mean" in variant.words else "vivit"
  if "joint" in variant.words and (size != "tiny" or kind != "vivit"):
    raise ValueError(f"variant word 'joint' picks the joint tower of the tiny ViViT recipe "
                     f"(b16x2 is joint already, frame_mean has none); got {arg!r}")
  c = base.base_config()
  c.model = ml_collections.ConfigDict(dict(
      name="video_text", embed_dim=sizes.EMBED_DIM["tiny" if size == "tiny" else "b16"],
      temperature_init=1 / 0.07, bias_init=None, dtype="float32",
      video=dict(video_tower(size, kind), **(TINY_POSITIONS if (size, kind) == ("tiny", "vivit")
                                             else {})),
      text=image_text.text_tower("tiny" if size == "tiny" else "b16", causal=True, pool="eot")))
  c.objectives = ml_collections.ConfigDict(dict(clip=dict(weight=1.0, max_scale=100.0)))
  c.evals = video_evals()

  if size == "tiny":  # the CPU recipe
    c.data = synthetic_video(max_len=TINY_MAX_LEN)
    # Two text layers over 24 positions (the longest synthetic caption is 21 tokens): a step
    # about 13% cheaper than 3 layers over 32.
    c.model.text.update(dict(depth=2, max_len=TINY_MAX_LEN))
    # The logit scale starts at 50 (CLIP's 1/0.07 = 14.3 learned the twins slower: each
    # tower's gradient toward the twin difference scales with it) and lr is 5e-4 (2e-3 never
    # left chance on the twins in 1500 steps, 1e-3 did slower: docs/video.md).
    c.model.temperature_init = 50.0
    if kind == "vivit" and "joint" not in variant.words:
      # The factorised encoder over single frames (2 spatial layers per frame, then 2 temporal
      # layers over the 8 frame tokens): the same FLOPs per step as the joint encoder's 4
      # layers over 2-frame tubelets, and the twins at 0.942 against 0.892 (docs/video.md,
      # run M): counting colour changes is a temporal encoder's job over one token per frame.
      c.model.video.update(dict(encoder="factorised", tubelet=1, depth=2, temporal_depth=2))
    # 2800 steps: 14m07s wall with data generation alone on the 2-core CPU, twins 0.938
    # (3000: 14m57s, 0.942; too close to the 15 minutes).
    base.cpu_schedule(c, batch_size=64, total_steps=2800, lr=5e-4)
    c.checkpoint_every = 1400
  else:  # accelerators
    c.data = msrvtt_data()
    c.evals = ml_collections.ConfigDict(dict(retrieval=dict(type="video_retrieval")))
    c.model.text.update(dict(vocab_size=32_000))
    c.model.dtype = "bfloat16"
    c.model.video.update(dict(scan=True, remat="dots"))
    c.model.text.update(dict(scan=True, remat="dots"))
    c.objectives.clip.chunked = True
    msrvtt_schedule(c)

  if variant.smoke and size == "tiny":
    c.data.source.variant = "small"
    base.smoke_schedule(c, total_steps=4)
    c.eval_batch_size = 32
  elif variant.smoke:
    c.model.video.update(dict(width=64, num_heads=2, depth=2))
    c.model.text.update(dict(width=64, num_heads=2, depth=2))
    c.model.embed_dim = 64
    base.smoke_schedule(c)
    c.eval_batch_size = 16
  return c
