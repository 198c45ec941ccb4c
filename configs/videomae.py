"""VideoMAE (Tong et al. 2022) masked video pretraining, InternVideo's first objective: the
joint ViViT encodes the visible 10% of tubes, a light decoder predicts the pixels of the
hidden ones (vlx/families/video/mae.py: model and task `video_mae`, objective `mae_pixels`).

Variants: tiny (CPU: the synthetic videos, 8 frames of 32 px; the encoder is configs/vivit.py's
joint tiny ViViT, `tiny,joint`, so its `video/` params can start that model); append ',smoke' for a run of
seconds. No evaluator: the reconstruction loss is the metric (train/mae_pixels/loss). Adding
the video-text contrastive objective is a matter of weights in `config.objectives` once a
model computes both. Override anything: --config.model.mask_ratio=0.75, ...
"""

import ml_collections

from vlx.presets import base
from vlx.variant import parse_variant

SIZES = ("tiny",)


def encoder(size: str) -> dict:
  """The ViViT joint encoder's fields: configs/vivit.py's `tiny,joint` tower (its position
  embeddings too, so `init_map=video_tower=video` starts that model from this one), without
  pooling."""
  del size
  return dict(encoder="joint", patch_size=8, tubelet=2, num_frames=8, width=128, depth=4,
              num_heads=4, mlp_ratio=4.0, posemb="sincos2d", time_posemb_init="sincos",
              scan=False, remat="none")


def synthetic_video() -> ml_collections.ConfigDict:
  """The embedded synthetic videos (generated on first use), video only: 10k/1k, 8 x 32 px."""
  return ml_collections.ConfigDict(dict(
      name="synthetic_video", source=dict(data_dir="", variant="default", vocab_size=256),
      train_split="train", test_split="test", keys=("video",), image_size=32, num_frames=8,
      max_len=16, pp_train="decode_video|video_value_range(-1,1)",
      pp_eval="decode_video|video_value_range(-1,1)", num_threads=2, prefetch=4))


def get_config(arg: str = "tiny"):
  variant = parse_variant(arg, sizes=SIZES)
  c = base.base_config()
  # VideoMAE's recipe, scaled down: 90% tube masking, a decoder half the encoder's width;
  # AdamW with beta2 = 0.95 and weight decay 0.05. Raw pixel targets, not VideoMAE's
  # per-tubelet normalised ones: most tubelets of the synthetic videos are background noise,
  # which normalised is unpredictable (150 steps on the small split: normalised 1.13 -> 0.999,
  # i.e. predicting zero; raw 0.48 -> 0.09). --config.model.norm_targets=True for real video.
  c.model = ml_collections.ConfigDict(dict(
      name="video_mae", encoder=encoder(variant.size), decoder_width=64, decoder_depth=2,
      decoder_heads=2, decoder_mlp_ratio=4.0, mask_ratio=0.9, norm_targets=False,
      dtype="float32"))
  c.task = "video_mae"
  c.objectives = ml_collections.ConfigDict({"mae_pixels": 1.0})
  c.evals = ml_collections.ConfigDict()
  c.data = synthetic_video()
  base.cpu_schedule(c, batch_size=64, total_steps=600, b2=0.95)

  if variant.smoke:
    c.data.source.variant = "small"
    base.smoke_schedule(c, total_steps=4)
  return c
