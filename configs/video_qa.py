"""Video QA (open-ended and multiple choice) and temporal grounding: a video tower and the
text tower joined by a single-stream fusion stack with three heads (vlx/families/video/qa.py),
trained on all three tasks at once and scored by `video_qa` (open-ended and multiple-choice
accuracy, per kind and concept; `qa_shuffled`: the same with each video's frames permuted,
the probe of whether the answers read time) and `temporal_grounding` (R@1 at IoU 0.5 / 0.7,
mIoU, and what predicting the whole video scores).

Each training video brings all three of its questions, its multiple choice (4 candidates; a
temporal video's include its twin's description, which a time-blind model cannot tell from
its own) and its grounding query with the span's frames: 8 texts, fused in one batch.

Variants: tiny (CPU: the synthetic videos, 8 frames of 32 px; a factorised ViViT 64 wide: a
spatial encoder per frame, then a temporal encoder over the 8 frame tokens, which fusion
reads: one token per frame is what per-frame grounding needs; 2400 steps of 32), b16x2
(accelerators: ViViT-B factorised, 2x16x16 tubelets, text and fusion at B width, bf16, scan
+ remat, FSDP; no real video QA reader is registered yet, so it reads the synthetic videos at
64 px: it builds, shards and trains, but its figures mean nothing); append ',smoke' for a run
of seconds (the small split, 4 steps). Override anything: --config.total_steps=...

tiny, measured (2400 steps, 6m31s wall with data generation, alone on a 2-core CPU): open-ended
QA 0.786, multiple choice 0.727 (frames shuffled: 0.689 / 0.550; temporal videos 0.770 /
0.721, shuffled 0.569 / 0.375, so the temporal answers read the frame order); grounding
R@1@0.5 1.0, R@1@0.7 1.0, mIoU 1.0 (the whole video for every query: 0.828, 0.648, 0.775).
"""

import ml_collections

from vlx.presets import base, image_text, sizes
from vlx.presets.video import QA_MAX_LEN, TINY_POSITIONS, qa_data, qa_evals, qa_objectives
from vlx.variant import parse_variant

SIZES = ("tiny", "b16x2")


def video_tower(size: str) -> dict:
  """ViViT factorised (model 2): frame tokens out of a temporal encoder. The tiny one has
  the tiny ViViT's position embeddings (unit-amplitude sinusoids in space and time
  from the first step)."""
  if size == "tiny":
    vit = dict(patch_size=8, width=64, depth=2, num_heads=4, tubelet=1, temporal_depth=2,
               num_frames=8, **TINY_POSITIONS)
  else:
    vit = dict(sizes.VIT["b16"], tubelet=2, temporal_depth=4, num_frames=8)
  return dict(dict(kind="vivit", encoder="factorised", frame_pool="gap", mlp_ratio=4.0,
                   pool="gap", posemb="learn", scan=False, remat="none"), **vit)


def get_config(arg: str = "tiny"):
  variant = parse_variant(arg, sizes=SIZES)
  size = variant.size
  c = base.base_config()
  text_size = "tiny" if size == "tiny" else "b16"
  text = image_text.text_tower(text_size, causal=False, pool="mean", max_len=QA_MAX_LEN)
  c.model = ml_collections.ConfigDict(dict(
      name="video_qa", video=video_tower(size), text=text, fusion_depth=2,
      fusion_heads=4 if size == "tiny" else 12, dtype="float32"))
  c.objectives = qa_objectives()
  c.evals = qa_evals()

  if size == "tiny":  # the CPU recipe
    c.data = qa_data()
    c.model.text.update(dict(width=64, depth=1))
    base.cpu_schedule(c, batch_size=32, total_steps=2400)
  else:  # accelerators
    c.data = qa_data(variant="default_64px", image_size=64)
    c.model.text.update(dict(width=768, num_heads=12, scan=True, remat="dots"))
    c.model.video.update(dict(scan=True, remat="dots"))
    c.model.dtype = "bfloat16"
    c.batch_size = 256
    c.total_steps = 10_000
    c.eval_every = 2_000
    c.optimizer.update(dict(lr=3e-4, warmup_steps=500, weight_decay=0.05))
    c.mesh.update(dict(data=1, fsdp=-1))

  if variant.smoke:
    c.data.source.variant = "small"
    c.data.image_size = 32
    if size != "tiny":
      c.model.video.update(dict(width=64, num_heads=2, depth=2, temporal_depth=1))
      c.model.text.update(dict(width=64, num_heads=2, depth=2))
      c.model.fusion_heads = 2
    base.smoke_schedule(c, total_steps=4)
    c.eval_batch_size = 32
    for name in c.evals:
      c.evals[name].limit = 32
  return c
