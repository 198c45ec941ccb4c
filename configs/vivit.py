"""ViViT video-text (Arnab et al. 2021 towers, CLIP's contrastive loss): a video tower and a
text tower in one embedding space, scored by text<->video retrieval and by the temporal twins
(a video's caption against its twin's: the same frames in another order).

Variants: tiny (CPU: the synthetic videos, 8 frames of 32 px, a joint ViViT with 2x8x8
tubelets), frame_mean (the same recipe with the per-frame image ViT averaged over frames: the
time-blind control, exactly 0.5 on the twins), b16x2 (accelerators: ViViT-B, 2x16x16
tubelets, 16 frames of 224 px, MSR-VTT video files (dataset `msrvtt`, decoded with PyAV;
point it at the data with --config.data.source.root=DIR), padded frames masked); append
',smoke' for a run of seconds. Override anything: --config.total_steps=...
"""

import ml_collections

from vlx.presets import base, image_text, sizes
from vlx.variant import parse_variant

SIZES = ("tiny", "b16x2")
WORDS = ("frame_mean",)
# The tiny ViViT's position signals have unit amplitude from the first step (a fixed 2-D
# sinusoid in space, a learned table started as a 1-D sinusoid in time) rather than ViT's
# 0.02-std learned tables; with them the twins rose above chance between 750 and 1500 steps
# (docs/video.md has the runs).
TINY_POSITIONS = dict(posemb="sincos2d", time_posemb_init="sincos")
TINY_MAX_LEN = 24


def video_tower(size: str, kind: str) -> dict:
  """The video tower's fields: ViViT joint (model 1), or FrameMean with the same ViT's
  per-frame fields (patch, width, depth, heads) for the time-blind control."""
  if size == "tiny":
    vit = dict(patch_size=8, width=128, depth=4, num_heads=4)
  else:
    vit = dict(sizes.VIT["b16"])
  vit.update(mlp_ratio=4.0, pool="gap", posemb="learn", scan=False, remat="none")
  if kind == "frame_mean":
    return dict(kind="frame_mean", **vit, stem="patch")
  return dict(kind="vivit", encoder="joint", tubelet=2, num_frames=8 if size == "tiny" else 16,
              **vit)


def synthetic_video(*, max_len: int = 32) -> ml_collections.ConfigDict:
  """The embedded synthetic videos (generated on first use): 10k/1k videos, 8 x 32 px.
  `shuffle_block=2` keeps each video and its twin (stored side by side) in one batch, so the
  contrastive loss has the twin's caption as a hard negative: without it a batch of 64 out of
  10k videos almost never holds both, and the recipe learned colour and shape but not time."""
  return ml_collections.ConfigDict(dict(
      name="synthetic_video", source=dict(data_dir="", variant="default", vocab_size=256),
      train_split="train", test_split="test", keys=("video", "text"), image_size=32,
      num_frames=8, max_len=max_len, shuffle_block=2,
      pp_train=f"decode_video|video_value_range(-1,1)|sample_caption|tokenize({max_len})",
      pp_eval="decode_video|video_value_range(-1,1)", num_threads=2, prefetch=4))


def video_evals() -> ml_collections.ConfigDict:
  """Retrieval (overall and per kind: `static/t2v_r1` is the control), the twins, and the
  twins with frames shuffled (the probe: a model that reads time falls to about 0.5)."""
  return ml_collections.ConfigDict(dict(
      retrieval=dict(type="video_retrieval", limit=None),
      twins=dict(type="twins", limit=None),
      twins_shuffled=dict(type="twins", frame_shuffle=True, limit=None)))


def get_config(arg: str = "tiny"):
  variant = parse_variant(arg, sizes=SIZES, words=WORDS)
  size = variant.size
  kind = "frame_mean" if "frame_mean" in variant.words else "vivit"
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
    # about 13% cheaper than 3 layers over 32, which buys 3000 steps inside 15 minutes.
    c.model.text.update(dict(depth=2, max_len=TINY_MAX_LEN))
    # The logit scale starts at 50 (CLIP's 1/0.07 = 14.3 learned the twins slower: each
    # tower's gradient toward the twin difference scales with it) and lr is 5e-4 (2e-3 never
    # left chance on the twins in 1500 steps, 1e-3 did slower: docs/video.md).
    c.model.temperature_init = 50.0
    base.cpu_schedule(c, batch_size=64, total_steps=3000, lr=5e-4)
    c.checkpoint_every = 1000
  else:  # accelerators
    c.data = ml_collections.ConfigDict(dict(
        name="msrvtt", source=dict(root="", vocab_size=32_000),
        train_split="train_9k", test_split="test_1k", keys=("video", "text", "frame_mask"),
        image_size=224,
        num_frames=16, max_len=32,
        pp_train=("decode_video_file(16, 224, 'segment', 'train')|video_value_range(-1,1)|"
                  "sample_caption|tokenize(32)"),
        pp_eval="decode_video_file(16, 224)|video_value_range(-1,1)", num_threads=8, prefetch=4))
    c.evals = ml_collections.ConfigDict(dict(retrieval=dict(type="video_retrieval")))
    c.model.text.update(dict(vocab_size=32_000))
    c.model.dtype = "bfloat16"
    c.model.video.update(dict(scan=True, remat="dots"))
    c.model.text.update(dict(scan=True, remat="dots"))
    c.objectives.clip.chunked = True
    c.batch_size = 512
    c.total_steps = 30_000
    c.optimizer.update(dict(lr=5e-4, warmup_steps=2_500, weight_decay=0.2))
    c.mesh.update(dict(data=1, fsdp=-1))

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
