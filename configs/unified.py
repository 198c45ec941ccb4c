"""Unified modelling (OFA / PaliGemma / Pix2Seq): one prefix-LM, image tokens + a task prompt
as the prefix and the answer as the suffix, trained on captioning, VQA, referring-expression
grounding and detection at once from one config (per-task sampling weights), scored by
generating and parsing. The model is vlx/families/unified/model.py (a ViT, a projector and the
Gemma-style decoder of vlx/models/gemma.py); the tasks are vlx/families/unified/tasks.py.

  python -m vlx.main --config=configs/unified.py:tiny --workdir=workdirs/unified_tiny
  :tiny,smoke   a few steps on the small variant, for tests

Results: docs/unified.md.
"""

import ml_collections

from vlx.families.unified.tasks import TASKS, Vocab
from vlx.presets import base, sizes
from vlx.variant import parse_variant

# Prompt block: the task token + the longest question (17 pieces); answers: the longest caption
# (27 pieces) or three objects' boxes and names; EOS comes on top of each.
PROMPT_LEN, TARGET_LEN = 18, 28
TEXT_VOCAB, NUM_BINS = 256, 32


def task_pp(weights=None, task=None) -> str:
  """The unified_task op with this config's lengths and vocabulary."""
  extra = f", {tuple(weights)}" if weights is not None else f", None, '{task}'"
  return (f"unified_task({PROMPT_LEN}, {TARGET_LEN}, {NUM_BINS}, {TEXT_VOCAB}{extra})")


def get_config(arg: str = "tiny"):
  variant = parse_variant(arg, sizes=("tiny",))
  c = base.base_config()
  # Per-task sampling weights, in TASKS order (caption, vqa, grounding, detection); another
  # mix: --config.data.pp_train with other weights in unified_task(...).
  weights = dict(caption=1.0, vqa=1.0, grounding=1.0, detection=1.0)
  c.data = ml_collections.ConfigDict(dict(
      name="synthetic_shapes", source=dict(data_dir="", variant="default",
                                           vocab_size=TEXT_VOCAB),
      train_split="train", test_split="test", image_size=64, max_len=TARGET_LEN,
      pp_train="decode|value_range(-1,1)|" + task_pp([weights[t] for t in TASKS]),
      pp_eval="decode|value_range(-1,1)|" + task_pp(task="caption"),
      keys=("image", "text_in", "mask_ar", "input_mask", "targets", "loss_mask"),
      num_threads=2, prefetch=4))
  vocab = Vocab(TEXT_VOCAB, NUM_BINS)
  c.model = ml_collections.ConfigDict(dict(
      name="prefix_lm", dtype="float32",
      image=dict(sizes.VIT["tiny"], mlp_ratio=4.0, stem="conv", posemb="learn"),
      decoder=dict(vocab_size=vocab.size, width=128, depth=4, num_heads=4, num_kv_heads=1,
                   head_dim=32, mlp_dim=512)))
  c.objectives = ml_collections.ConfigDict(dict(prefix_lm=dict(weight=1.0)))
  shared = dict(prompt_len=PROMPT_LEN, target_len=TARGET_LEN, num_bins=NUM_BINS,
                text_size=TEXT_VOCAB, limit=512)
  c.evals = ml_collections.ConfigDict({
      f"unified_{t}": dict(type=f"unified_{t}", **shared) for t in TASKS})
  base.cpu_schedule(c, batch_size=64, total_steps=1500, lr=1e-3)
  if variant.smoke:
    c.data.source.variant = "small"
    base.smoke_schedule(c)
    for name in c.evals:
      c.evals[name].limit = 16
  return c
