"""Video-LMM post-training on the reasoning videos (vlx/families/video_lmm/): a small
video-language prefix-LM (the unified family's ViT -> projector -> Gemma-style decoder, the
ViT reading each of the 8 frames, a fixed sinusoid marking each frame's time) pretrained by
describing the videos, then taught to answer count / order / direction / "when is X
visible" questions.

  python -m vlx.main --config=configs/video_lmm.py:tiny --workdir=workdirs/vlmm_cot
      chain-of-thought SFT on the `cot` split (`<think>` trace `</think><answer>` answer
      `</answer>`), starting from `:tiny,pretrain`, which vlx.main trains first beside the
      workdir (vlx/train/init_run.py) and reuses
  :tiny,pretrain   captioning pretraining: the description of every video of the `train` split
  :tiny,answer     the answer-only SFT baseline on the same `cot` split (matched data)
  :tiny,grpo       GRPO from verifiable rewards on the `train` split's questions, starting
                   from the CoT SFT run (`:tiny`, trained first beside the workdir); 8
                   prompts x 8 rollouts a step, sampled inside the train step
  :tiny,smoke      a few steps on the small variant, for tests
  :ft=DIR          the same stages on an imported PaliGemma (`python -m vlx.convert
                   --src=HF_PALIGEMMA --out=DIR`: its ViT, Gemma decoder, tokenizer, image
                   size and preprocessing) instead of the tiny model: CoT SFT from DIR;
                   `ft=DIR,answer` answer-only SFT; `ft=DIR,grpo` GRPO from the `ft=DIR` CoT
                   run (trained first beside the workdir); append ',smoke' for a few steps.
                   The prompts are in PaliGemma's words (`<bos>answer en QUESTION` + newline).
                   An accelerator's job (each 224 px frame is 256 image tokens), with the
                   tiny recipe's batch and steps and the checkpoint's dtype: set them for yours

Scored by `reasoning_qa` (vlx/families/video_lmm/evals.py): the verifiers' accuracy per
question kind, span mIoU and format rate on the held-out `test` split.
"""

import os

import ml_collections

from vlx.families.video_lmm.reasoning_videos import CLIP_FRAMES
from vlx.families.video_lmm.tasks import vocab_size
from vlx.presets import base, sizes
from vlx.presets.finetune import preprocess_op, read_paligemma
from vlx.variant import parse_variant

TEXT_VOCAB = 256
# Measured maxima on the `cot` / `train` / `test` splits: prompts 13 ids (task token +
# question), responses 31 (CoT) and captions 30, EOS excluded; `sep` and EOS come on top.
PROMPT_LEN, TARGET_LEN = 16, 36
STAGES = ("pretrain", "answer", "grpo")


def qa_op(response: str) -> str:
  return (f"decode_video|video_value_range(-1,1)|reasoning_qa({PROMPT_LEN}, {TARGET_LEN}, "
          f"'{response}', {TEXT_VOCAB})")


# ft=DIR: room for Gemma's pieces (`<bos>answer en` + the longest question; a CoT response):
# not measured with Gemma's own tokenizer (tasks.lengths(handle, words="paligemma", ...) does),
# so twice the tiny recipe's maxima, about 1.5x a hand count in Gemma pieces.
FT_PROMPT_LEN, FT_TARGET_LEN = 32, 64


def imported_model(c, path: str, response: str, stage: str, smoke: bool) -> None:
  """Point the stage at a converted PaliGemma (`ft=DIR`): its model, weights (`init_from`),
  tokenizer, frame size and preprocessing; the questions in its words (tasks.words_for)."""
  path, meta, loc_start, size = read_paligemma(
      path, "configs/video_lmm.py", "and configs/video_lmm.py reads <loc0000> as where "
      "PaliGemma's text ids end")
  video_pp = preprocess_op(meta["preprocess"], "preprocess_video")
  words = dict(text_size=int(loc_start), words="paligemma", vocab_size=size)
  op = (f"decode_video|{video_pp}|reasoning_qa({FT_PROMPT_LEN}, {FT_TARGET_LEN}, "
        f"'{response}', {loc_start}, 'paligemma', {size})")
  c.init_from = path
  c.model = ml_collections.ConfigDict(dict(meta["model"], clip_frames=CLIP_FRAMES))
  c.data.update(dict(image_size=meta["image_size"], max_len=FT_TARGET_LEN,
                     tokenizer=meta["tokenizer"], pretrained_preprocess=meta["preprocess"],
                     pp_train=op, pp_eval=op))
  for ev in c.evals.values():
    ev.update(dict(prompt_len=FT_PROMPT_LEN, target_len=FT_TARGET_LEN, video_pp=video_pp,
                   **words))
  # No pretraining stage: DIR is the pretrained model. big_vision's PaliGemma transfers' small
  # learning rate and no weight decay for SFT; ten times smaller for GRPO (as the tiny
  # recipe's GRPO is ten times below its SFT).
  c.init_from_run = ""
  c.optimizer.update(dict(lr=1e-5 if stage != "grpo" else 1e-6, weight_decay=0.0))
  if stage == "grpo":  # from the ft=DIR CoT run; responses end at the imported EOS
    c.init_from_run = f"{os.path.abspath(__file__)}:ft={path}" + (",smoke" if smoke else "")
    c.init_from = ""
    c.rollout.update(dict(max_len=FT_TARGET_LEN, text_size=int(loc_start)))


def grpo_stage(c, variant):
  """GRPO on the `train` split's questions from the CoT SFT run (vlx/families/video_lmm/grpo.py:
  the rollouts are drawn inside the step; the batch holds the prompts and their answer keys)."""
  c.task = "grpo"
  c.data.train_split = "train"
  c.data["keys"] = c.data["keys"] + ("prompt", "prompt_mask", "prompt_ar", "kind_id",
                                     "answer_ids", "option_ids", "span")
  c.rollout = ml_collections.ConfigDict(dict(
      group_size=8, max_len=TARGET_LEN, temperature=1.0, text_size=TEXT_VOCAB,
      advantage_scale="std", rewards=dict(accuracy=1.0, format=0.2, temporal_iou=0.5),
      # the KL to the start policy logged (a copy of it kept and run forward on each batch
      # of rollouts) though not penalised; False saves that forward
      track_kl=True,
      # DAPO's dynamic sampling: train on this many of the batch's prompt groups, those whose
      # rewards differ first (0: all; read more prompts than that with batch_size)
      keep_prompts=0))
  # DAPO's clip-higher and token-level averaging; no KL term (beta 0).
  c.objectives = ml_collections.ConfigDict(dict(grpo=dict(
      eps_low=0.2, eps_high=0.28, beta=0.0, average="token", temperature=1.0)))
  c.init_from_run = c.init_from_run.replace(":tiny,pretrain", ":tiny")
  base.cpu_schedule(c, batch_size=8, total_steps=150, evals=1, lr=1e-4)
  c.log_every = 10  # one step's rollouts are 64 responses: curves need many points
  del variant


def get_config(arg: str = "tiny"):
  variant = parse_variant(arg, sizes=("tiny",), words=STAGES, keys=("ft",))
  if len(variant.words) > 1:
    raise ValueError(f"configs/video_lmm.py: one stage at a time, got {sorted(variant.words)}")
  stage = next(iter(variant.words), "cot")
  ft = variant.values.get("ft")
  if ft and (variant.size_given or stage == "pretrain"):
    raise ValueError(f"video_lmm variant {arg!r}: ft=DIR takes a stage (answer, grpo; CoT SFT "
                     "without one) and ',smoke'; the model and its pretraining come from DIR")
  c = base.base_config()
  response = {"pretrain": "caption", "answer": "answer"}.get(stage, "cot")
  c.data = ml_collections.ConfigDict(dict(
      name="reasoning_video", source=dict(data_dir="", variant="default",
                                          vocab_size=TEXT_VOCAB),
      train_split="train" if stage == "pretrain" else "cot", test_split="test",
      image_size=32, num_frames=8, max_len=TARGET_LEN,
      pp_train=qa_op(response), pp_eval=qa_op(response),
      keys=("video", "text_in", "mask_ar", "input_mask", "targets", "loss_mask"),
      num_threads=2, prefetch=4))
  c.model = ml_collections.ConfigDict(dict(
      name="prefix_lm", dtype="float32", layout="decoder_only", encoder_depth=0,
      # 32 px frames in 8 px patches: 16 tokens a frame, 128 a video.
      image=dict(sizes.VIT["tiny"], patch_size=8, mlp_ratio=4.0, stem="conv",
                 posemb="sincos2d"),
      # frames marked by their time in an 8-frame clip: read at 16 frames (the evaluator's
      # `split=test_16f`), frame j is marked at (j + 0.5) / 2 - 0.5, between the trained marks
      clip_frames=CLIP_FRAMES,
      decoder=dict(vocab_size=vocab_size(TEXT_VOCAB), width=128, depth=4, num_heads=4,
                   num_kv_heads=1, head_dim=32, mlp_dim=512)))
  c.objectives = ml_collections.ConfigDict(dict(prefix_lm=1.0))
  if stage == "pretrain":
    c.evals = ml_collections.ConfigDict()
  else:
    c.evals = ml_collections.ConfigDict(dict(reasoning_qa=dict(
        type="reasoning_qa", prompt_len=PROMPT_LEN, target_len=TARGET_LEN,
        text_size=TEXT_VOCAB, response=response, limit=1000,
        # baselines and test-time scaling (experiments/post_training.py sets them); more
        # frames at test time: split="test_16f" (the test questions, each clip at 16 frames;
        # empty: data.test_split)
        frames="ordered", num_samples=1, split="")))
    c.init_from_run = f"{os.path.abspath(__file__)}:tiny,pretrain" + (
        ",smoke" if variant.smoke else "")
    # Per seed, its own chain of stages (the seed is part of the earlier run's config).
    c.init_from_run_inherits = ("data.source", "model", "seed")
  base.cpu_schedule(c, batch_size=32, total_steps=600, evals=1, lr=1e-3)
  if stage == "grpo":
    grpo_stage(c, variant)
  if ft:
    imported_model(c, ft, response, stage, variant.smoke)
  if variant.smoke:
    c.data.source.variant = "small"
    base.smoke_schedule(c)
    for name in c.evals:
      c.evals[name].limit = 16
    if stage == "grpo":
      c.batch_size, c.rollout.group_size = 8, 4
  return c
