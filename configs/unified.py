"""Unified modelling (OFA / PaliGemma / Pix2Seq): one prefix-LM, image tokens + a task prompt
as the prefix and the answer as the suffix, trained on captioning, VQA, referring-expression
grounding and detection at once from one config, scored by generating and parsing. The model
is vlx/families/unified/model.py (a ViT, a projector and the Gemma-style decoder of
vlx/models/gemma.py); the tasks are vlx/families/unified/tasks.py.

  python -m vlx.main --config=configs/unified.py:tiny --workdir=workdirs/unified_tiny
  :tiny,ofa           OFA's encoder-decoder layout (a 2-layer encoder over [image; prompt], a
                      2-layer decoder cross-attending to it: the same depth in all), one task
                      per example (packing is for the decoder-only layout; detection targets
                      in random order)
  :tiny,smoke         a few steps on the small variant, for tests
  :tiny,random_order  detection targets in a new random order each time (Pix2Seq), not raster
  :tiny,loc_code      a fixed coordinate code on image and location tokens (docs: run F)
  :ft=DIR             fine-tune an imported PaliGemma (`python -m vlx.convert
                      --src=HF_PALIGEMMA --out=DIR`) on the four tasks, one per example, in
                      PaliGemma's own words, ids and location tokens (tasks.PaliGemmaWords);
                      append ',smoke' for a few steps

Results: docs/unified.md.
"""

import ml_collections

from vlx.families.unified.tasks import TASKS, Vocab
from vlx.presets import base, sizes
from vlx.presets.finetune import preprocess_op, read_paligemma
from vlx.variant import parse_variant

TEXT_VOCAB, NUM_BINS = 256, 32
# Evaluation text block: the task token + the longest question (11 pieces), answers up to the
# longest caption (27 pieces); EOS comes on top.
PROMPT_LEN, TARGET_LEN = 18, 28
# Training packs several tasks onto each image (unified_pack), each block at its own task's
# (prompt_len, target_len): caption, vqa, grounding, detection (measured maxima on the scenes:
# prompts 1 / 12 / 10 / 1 ids, targets 27 / 3 / 4 / 18, EOS excluded).
PACK_LENGTHS = ((1, 28), (12, 4), (10, 5), (1, 19))
# Blocks per image, the per-task sampling weights of the packed recipe: 10 answers per image.
PACK_COUNTS = dict(caption=1, vqa=4, grounding=3, detection=2)


def unified_task(task: str, isolate: bool = True, weights=None) -> str:
  """The one-task-per-example op with this config's lengths and vocabulary (`task`, or
  `weights` over TASKS to draw one per example for training)."""
  extra = f"{tuple(weights)}, None" if weights is not None else f"None, '{task}'"
  return (f"unified_task({PROMPT_LEN}, {TARGET_LEN}, {NUM_BINS}, {TEXT_VOCAB}, {extra}, "
          f"{isolate})")


# ft=DIR: Gemma pieces ("answer en" + the longest question; 3 objects, each 4 location tokens,
# a name and " ;"), the sampling weights of the one-task-per-example recipe.
FT_PROMPT_LEN, FT_TARGET_LEN, FT_WEIGHTS = 24, 32, (1.0, 3.0, 3.0, 3.0)


def paligemma_finetune(path: str, smoke: bool) -> ml_collections.ConfigDict:
  """The four tasks on the synthetic scenes for an imported PaliGemma: its model, image size,
  preprocessing and tokenizer from DIR (`python -m vlx.convert --out=DIR`), the tasks in its
  words (PaliGemmaProcessor's prompt + suffix layout, its `<locNNNN>` ids), one task per example
  with the prompt in the bidirectional prefix as PaliGemma was trained (not packed)."""
  path, meta, loc_start, vocab_size = read_paligemma(
      path, "configs/unified.py", "so grounding and detection cannot be written")
  image_op = preprocess_op(meta["preprocess"])
  words = f"'paligemma', {vocab_size}"

  def task(name=None, weights=None):
    what = f"{tuple(weights)}, None" if weights else f"None, '{name}'"
    return (f"unified_task({FT_PROMPT_LEN}, {FT_TARGET_LEN}, 1024, {loc_start}, {what}, "
            f"False, {words})")
  c = base.base_config()
  c.init_from = path
  c.model = ml_collections.ConfigDict(meta["model"])
  c.data = ml_collections.ConfigDict(dict(
      name="synthetic_shapes", source=dict(data_dir="", variant="default",
                                           vocab_size=TEXT_VOCAB),
      train_split="train", test_split="test", image_size=meta["image_size"],
      max_len=FT_TARGET_LEN, tokenizer=meta["tokenizer"], pretrained_preprocess=meta["preprocess"],
      pp_train=f"decode|{image_op}|" + task(weights=FT_WEIGHTS),
      pp_eval=f"decode|{image_op}|" + task("caption"),
      keys=("image", "text_in", "mask_ar", "input_mask", "targets", "loss_mask"),
      num_threads=2, prefetch=4))
  # Plain cross-entropy on the answer, PaliGemma's training loss.
  c.objectives = ml_collections.ConfigDict(dict(prefix_lm=dict(weight=1.0)))
  shared = dict(prompt_len=FT_PROMPT_LEN, target_len=FT_TARGET_LEN, num_bins=1024,
                text_size=loc_start, limit=512, isolate=False, words="paligemma",
                vocab_size=vocab_size, image_pp=image_op)
  c.evals = ml_collections.ConfigDict({
      f"unified_{t}": dict(type=f"unified_{t}", **shared) for t in TASKS})
  # big_vision's PaliGemma transfers: a small learning rate, no weight decay.
  c.batch_size, c.total_steps = 64, 2000
  c.eval_every = c.checkpoint_every = 500
  c.optimizer.update(dict(lr=1e-5, warmup_steps=100, weight_decay=0.0))
  if smoke:
    c.data.source.variant = "small"
    base.smoke_schedule(c)
    for name in c.evals:
      c.evals[name].limit = 16
  return c


def get_config(arg: str = "tiny"):
  variant = parse_variant(arg, sizes=("tiny",), words=("ofa", "loc_code", "random_order"),
                          keys=("ft",))
  if variant.values:
    if variant.words or variant.size_given:
      raise ValueError(f"unified variant {arg!r}: ft=DIR takes only ',smoke'; the model comes "
                       "from DIR")
    return paligemma_finetune(variant.values["ft"], variant.smoke)
  if "ofa" in variant.words and "random_order" in variant.words:
    raise ValueError("unified variant: ofa trains one task per example, whose detection "
                     "targets are always in random order; random_order is for the packed recipe")
  c = base.base_config()
  counts = tuple(PACK_COUNTS[t] for t in TASKS)
  # Detection targets in one fixed raster order: on this budget it beat Pix2Seq's new random
  # order each time (`random_order`) on every task (docs/unified.md, runs G and R).
  order = "random" if "random_order" in variant.words else "raster"
  # Another mix: other counts here; one task per example instead (what the encoder-decoder
  # layout takes, `ofa` below): unified_task with per-task sampling weights.
  c.data = ml_collections.ConfigDict(dict(
      name="synthetic_shapes", source=dict(data_dir="", variant="default",
                                           vocab_size=TEXT_VOCAB),
      train_split="train", test_split="test", image_size=64, max_len=TARGET_LEN,
      pp_train=(f"decode|value_range(-1,1)|unified_pack({PACK_LENGTHS}, {counts}, "
                f"{NUM_BINS}, {TEXT_VOCAB}, '{order}')"),
      pp_eval="decode|value_range(-1,1)|" + unified_task("caption"),
      keys=("image", "text_in", "mask_ar", "input_mask", "targets", "loss_mask", "segment",
            "text_positions"),
      num_threads=2, prefetch=4))
  vocab = Vocab(TEXT_VOCAB, NUM_BINS)
  c.model = ml_collections.ConfigDict(dict(
      name="prefix_lm", dtype="float32", layout="decoder_only", encoder_depth=0,
      # Fixed 2-D sin-cos positions: where each patch is, from the first step (boxes are read
      # off the image tokens' positions).
      # A conv stem four times as wide as the default (32, 64, 128): the misses are telling
      # the shapes apart and seeing the small ones; twice as wide took grounding from 0.412
      # to 0.477 (run W), four times detection's AP50 from 0.116 to 0.206 and VQA from 0.711
      # to 0.731, for 26% more FLOPs a step than W (docs/unified.md, run X).
      image=dict(sizes.VIT["tiny"], mlp_ratio=4.0, stem="conv", posemb="sincos2d",
                 stem_channels=(128, 256, 512)),
      decoder=dict(vocab_size=vocab.size, width=128, depth=4, num_heads=4, num_kv_heads=1,
                   head_dim=32, mlp_dim=512)))
  if "loc_code" in variant.words:  # a fixed coordinate code on location and image tokens
    c.model.loc_code = dict(start=vocab.loc.start, num_bins=NUM_BINS)
  # Location targets spread over neighbouring bins (sigma 1 bin): a box one bin off costs
  # less than one far off, which one-hot targets cannot say.
  c.objectives = ml_collections.ConfigDict(dict(prefix_lm=dict(
      weight=1.0, loc_start=vocab.loc.start, num_bins=NUM_BINS, loc_sigma=1.0)))
  shared = dict(prompt_len=PROMPT_LEN, target_len=TARGET_LEN, num_bins=NUM_BINS,
                text_size=TEXT_VOCAB, limit=512, isolate=True)
  c.evals = ml_collections.ConfigDict({
      f"unified_{t}": dict(type=f"unified_{t}", **shared) for t in TASKS})
  # ~1.1-1.2 s a step of 32 packed images on the 2-core CPU: 850 steps and the evaluation
  # took 17m09s, 18.6 minutes with the dataset's generation (docs/unified.md, run X).
  base.cpu_schedule(c, batch_size=32, total_steps=850, evals=1, lr=1e-3)
  if "ofa" in variant.words:
    c.model.update(dict(layout="encoder_decoder", encoder_depth=2))
    c.model.decoder.depth = 2
    weights = (1.0, 3.0, 3.0, 3.0)   # caption, vqa, grounding, detection
    # The prompt joins the encoder's prefix (not isolated): the encoder reads [image; prompt],
    # the decoder starts at `sep`, as the generator's encoder-decoder path splits them.
    c.data.pp_train = "decode|value_range(-1,1)|" + unified_task(None, False, weights)
    c.data.pp_eval = "decode|value_range(-1,1)|" + unified_task("caption", False)
    for name in c.evals:
      c.evals[name].isolate = False
    c.data["keys"] = tuple(k for k in c.data["keys"] if k not in ("segment", "text_positions"))
  if variant.smoke:
    c.data.source.variant = "small"
    base.smoke_schedule(c)
    for name in c.evals:
      c.evals[name].limit = 16
  return c
