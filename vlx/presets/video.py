"""Video sections the video configs share (configs/vivit.py, video_coca.py, video_qa.py,
video_transfer.py): the towers' fields, the synthetic and MSR-VTT data blocks, the
contrastive evaluators and the MSR-VTT accelerator schedule."""

from __future__ import annotations

import ml_collections

from vlx.presets import sizes

# The tiny ViViT's position signals have unit amplitude from the first step (a fixed 2-D
# sinusoid in space, a learned table started as a 1-D sinusoid in time) rather than ViT's
# 0.02-std learned tables; with them the twins rose above chance between 750 and 1500 steps
# (docs/video.md has the runs).
TINY_POSITIONS = dict(posemb="sincos2d", time_posemb_init="sincos")
# Text positions of the tiny contrastive recipes (the longest synthetic caption is 21 tokens).
TINY_MAX_LEN = 24


def vit_fields(size: str) -> dict:
  """The per-frame ViT of each size: tiny (8 px patches of 32 px frames) or ViT-B/16."""
  vit = dict(patch_size=8, width=128, depth=4, num_heads=4) if size == "tiny" else dict(
      sizes.VIT["b16"])
  vit.update(mlp_ratio=4.0, pool="gap", posemb="learn", scan=False, remat="none")
  return vit


def video_tower(size: str, kind: str) -> dict:
  """The video tower's fields: ViViT joint (model 1), or FrameMean with the same ViT's
  per-frame fields (patch, width, depth, heads) for the time-blind control."""
  vit = vit_fields(size)
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


# Video QA / grounding (configs/video_qa.py, video_transfer.py's `qa`): question length and
# the fields every training video brings (its questions, a multiple choice, a grounding query).
QA_MAX_LEN = 16
QA_KEYS = ("video", "question", "answer_scores", "choices", "choice_target", "query",
           "span_mask")


def qa_data(*, variant: str = "default", image_size: int = 32,
            max_len: int = QA_MAX_LEN) -> ml_collections.ConfigDict:
  """The embedded synthetic videos with every task's fields (video_qa, video_choice,
  video_span pp ops; texts of `max_len` tokens); evaluation reads the records' own fields."""
  tasks = f"video_qa_all({max_len})|video_choice({max_len})|video_span({max_len})"
  return ml_collections.ConfigDict(dict(
      name="synthetic_video", source=dict(data_dir="", variant=variant, vocab_size=256),
      train_split="train", test_split="test", keys=QA_KEYS, image_size=image_size,
      num_frames=8, max_len=max_len,
      pp_train=f"decode_video|video_value_range(-1,1)|{tasks}",
      pp_eval="decode_video|video_value_range(-1,1)", num_threads=2, prefetch=4))


def qa_objectives() -> ml_collections.ConfigDict:
  """Open-ended answers, multiple choice and per-frame grounding, trained at once."""
  return ml_collections.ConfigDict(dict(
      vqa=1.0, video_choice=1.0, video_span=dict(weight=1.0, span_weight=1.0)))


def qa_evals() -> ml_collections.ConfigDict:
  """QA accuracy (and with frames shuffled: the probe of whether answers read time) and
  temporal grounding."""
  return ml_collections.ConfigDict(dict(
      qa=dict(type="video_qa", limit=None),
      qa_shuffled=dict(type="video_qa", frame_shuffle=True, limit=None),
      grounding=dict(type="temporal_grounding", limit=None)))


def video_evals() -> ml_collections.ConfigDict:
  """Retrieval (overall and per kind: `static/t2v_r1` is the control), the twins, and the
  twins with frames shuffled (the probe: a model that reads time falls to about 0.5)."""
  return ml_collections.ConfigDict(dict(
      retrieval=dict(type="video_retrieval", limit=None),
      twins=dict(type="twins", limit=None),
      twins_shuffled=dict(type="twins", frame_shuffle=True, limit=None)))


def msrvtt_data(frames: int = 16, image_size: int = 224) -> ml_collections.ConfigDict:
  """MSR-VTT video files (dataset `msrvtt`, decoded with PyAV; point it at the data with
  --config.data.source.root=DIR), padded frames masked."""
  return ml_collections.ConfigDict(dict(
      name="msrvtt", source=dict(root="", vocab_size=32_000),
      train_split="train_9k", test_split="test_1k", keys=("video", "text", "frame_mask"),
      image_size=image_size, num_frames=frames, max_len=32,
      pp_train=(f"decode_video_file({frames}, {image_size}, 'segment', 'train')|"
                "video_value_range(-1,1)|sample_caption|tokenize(32)"),
      pp_eval=f"decode_video_file({frames}, {image_size})|video_value_range(-1,1)",
      num_threads=8, prefetch=4))


def msrvtt_schedule(c: ml_collections.ConfigDict) -> None:
  """The accelerator contrastive schedule on MSR-VTT: batch 512, 30k steps, AdamW 5e-4, FSDP."""
  c.batch_size = 512
  c.total_steps = 30_000
  c.optimizer.update(dict(lr=5e-4, warmup_steps=2_500, weight_decay=0.2))
  c.mesh.update(dict(data=1, fsdp=-1))
