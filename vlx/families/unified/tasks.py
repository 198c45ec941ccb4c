"""Every task as a prompt and a target sequence (PaliGemma / Pix2Seq), on the synthetic scenes.

The vocabulary is the dataset's sentencepiece ids, then `num_bins` location tokens
(vlx/data/loc_tokens.py: y0, x0, y1, x1), then `sep` (the first token of every answer), then
one prompt token per task. A task is this module's prompt and target, nothing else:

  caption    [caption]                 -> a caption
  vqa        [vqa] question words      -> the answer word
  grounding  [grounding] expression    -> 4 location tokens of the referred object
  detection  [detection]               -> every object (training: in raster or random order), as
                                          4 location tokens + its class name ("red circle")

Text block (one fixed length per batch): the prompt left-padded to `prompt_len`, then the
suffix `sep, target..., EOS` right-padded to `target_len + 1`. `mask_ar` is 0 on the prompt
and 1 on the suffix (vlx/models/masks.py), `targets[i]` is the token after position i, and
`loss_mask` is 1 exactly where a suffix position predicts a target token or the EOS.

`PaliGemmaWords` writes the same tasks in PaliGemma's tokens and layout, for fine-tuning an
imported PaliGemma (`configs/unified.py:ft=DIR`): `<bos>` + "caption en" / "answer en
QUESTION" / "detect EXPRESSION" / "detect all objects" + the newline, all of it the
bidirectional prefix (PaliGemmaProcessor's layout), answers after the newline, its EOS, its
1024 location tokens, detected objects separated by " ;". The answers' formats are vlx's
(a grounding answer is its 4 location tokens, without PaliGemma's trailing name; no space
token before the next object's boxes): the fine-tune teaches them.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Sequence

import numpy as np

from vlx import registry
from vlx.data import scene_qa
from vlx.data import shapes_render as R
from vlx.data.loc_tokens import LocTokens
from vlx.token_ids import EOS_ID, PAD_ID

TASKS = ("caption", "vqa", "grounding", "detection")


@dataclasses.dataclass(frozen=True)
class Vocab:
  """Where the location, separator and task-prompt ids sit after the text vocabulary."""
  text_size: int           # the sentencepiece vocabulary (config data.source.vocab_size)
  num_bins: int = 32

  @property
  def loc(self) -> LocTokens:
    return LocTokens(self.text_size, self.num_bins)

  @property
  def sep(self) -> int:
    return self.text_size + self.num_bins

  def task_token(self, task: str) -> int:
    return self.sep + 1 + TASKS.index(task)

  @property
  def size(self) -> int:
    return self.sep + 1 + len(TASKS)

  eos = EOS_ID
  sep_in_prefix = False   # `sep` starts the suffix (mask_ar 1)
  object_sep = None       # nothing between detected objects

  def prompt(self, task: str, tokenizer, text: str = "") -> List[int]:
    """The task's token, then the text's pieces (a question, an expression)."""
    return [self.task_token(task)] + (pieces(tokenizer, text) if text else [])

  def class_ids(self, tokenizer) -> List[List[int]]:
    return class_ids(tokenizer)


# PaliGemma's task prefixes (big_vision's transfers: "caption en", "answer en ...",
# "detect ..."); detecting every object of a scene has no PaliGemma prefix of its own.
PALIGEMMA_PROMPTS = dict(caption="caption en", vqa="answer en", grounding="detect",
                         detection="detect all objects")


@dataclasses.dataclass(frozen=True)
class PaliGemmaWords:
  """The tasks in an imported PaliGemma's tokens (module docstring): `size` is its decoder's
  vocabulary, `loc_start` its `<loc0000>` id. Built from the Gemma sentencepiece tokenizer
  (`from_tokenizer`)."""
  size: int
  loc_start: int
  bos: int
  eos: int
  sep: int           # the newline that ends every prompt
  object_sep: int    # " ;" between detected objects
  num_bins: int = 1024
  sep_in_prefix = True

  @classmethod
  def from_tokenizer(cls, tokenizer, size: int, loc_start: int, num_bins: int = 1024):
    sp = tokenizer.sp
    newline, semicolon = sp.encode("\n"), sp.encode(" ;")
    if len(newline) != 1 or len(semicolon) != 1:
      raise ValueError(f"PaliGemma words: the tokenizer must have the newline and ' ;' as one "
                       f"piece each (Gemma's has); got {newline} and {semicolon}")
    if loc_start + num_bins > size:
      raise ValueError(f"PaliGemma words: location tokens [{loc_start}, {loc_start + num_bins})"
                       f" do not fit the decoder's {size} ids")
    return cls(size=int(size), loc_start=int(loc_start), bos=sp.bos_id(), eos=sp.eos_id(),
               sep=newline[0], object_sep=semicolon[0], num_bins=int(num_bins))

  @property
  def loc(self) -> LocTokens:
    return LocTokens(self.loc_start, self.num_bins)

  @property
  def text_size(self) -> int:   # ids below the location tokens are text
    return self.loc_start

  def prompt(self, task: str, tokenizer, text: str = "") -> List[int]:
    """`<bos>` + the task's words (+ " " + the text), as PaliGemmaProcessor tokenizes them
    (the newline is `sep`, the prompt's last token)."""
    words = PALIGEMMA_PROMPTS[task] + (f" {text}" if text else "")
    return [self.bos] + pieces(tokenizer, words)

  def class_ids(self, tokenizer) -> List[List[int]]:
    """Class names as PaliGemma writes them after a box: with a leading space."""
    return [pieces(tokenizer, " " + name) for name in R.class_names()]


def pieces(tokenizer, text: str) -> List[int]:
  """The text's ids without EOS or padding."""
  eos = getattr(tokenizer, "eos_id", EOS_ID)
  ids = [int(t) for t in tokenizer.encode([text], 256)[0]]
  return ids[:ids.index(eos)] if eos in ids else ids


def class_ids(tokenizer) -> List[List[int]]:
  """Each detection class's name ('colour shape', class = colour * 4 + shape) as ids."""
  return [pieces(tokenizer, name) for name in R.class_names()]


def text_block(prompt: Sequence[int], target: Sequence[int], vocab: Vocab, prompt_len: int,
               target_len: int, isolate: bool = False) -> Dict[str, np.ndarray]:
  """The fields the model and the `prefix_lm` objective read (module docstring). `target`
  excludes EOS; both sides are cut to fit, at their ends (the configs' lengths cover the
  synthetic text).
  `isolate`: the prompt starts its own block (`mask_ar` 1 on its first token), so the image
  tokens do not read it: the image is then encoded the same for every task, what packing
  several tasks onto one image (`unified_pack`) needs."""
  # A prompt too long loses its end, never its start: the task token (or PaliGemma's <bos>
  # and task words) stays what the model reads first.
  prompt = list(prompt)[:prompt_len]
  suffix = [vocab.sep] + list(target)[:target_len - 1] + [vocab.eos]
  p, s = prompt_len, target_len + 1
  text = np.full((p + s,), PAD_ID, np.int32)
  text[p - len(prompt):p] = prompt
  text[p:p + len(suffix)] = suffix
  real = np.zeros((p + s,), bool)
  real[p - len(prompt):p + len(suffix)] = True
  targets = np.zeros((p + s,), np.int32)
  targets[:-1] = text[1:]
  loss_mask = np.zeros((p + s,), np.float32)
  loss_mask[p:p + len(suffix) - 1] = 1.0
  # `sep` ends the prompt (PaliGemma's newline, the prefix) or starts the answer (vlx's).
  mask_ar = (np.arange(p + s) >= p + int(vocab.sep_in_prefix)).astype(np.int32)
  if isolate and prompt:
    mask_ar[p - len(prompt)] = 1
  return dict(text_in=text, mask_ar=mask_ar, input_mask=real, targets=targets,
              loss_mask=loss_mask)


def prompt_fields(block: Dict[str, np.ndarray], prompt_len: int) -> Dict[str, np.ndarray]:
  """What generation starts from: the prompt block and `sep` (the answer's first token)."""
  n = prompt_len + 1
  return dict(prompt=block["text_in"][:n], prompt_mask=block["input_mask"][:n],
              prompt_ar=block["mask_ar"][:n])


ORDERS = ("random", "raster")


def object_order(objects, order: str, rng: np.random.Generator) -> np.ndarray:
  """The order detection targets list objects in: `random` (Pix2Seq: a new order every time)
  or `raster` (top to bottom by the box's top edge, then left to right: one fixed sequence
  per image, which a short schedule learns faster)."""
  if order == "random":
    return rng.permutation(len(objects))
  if order == "raster":
    return np.array(sorted(range(len(objects)),
                           key=lambda j: (objects[j]["box"][0], objects[j]["box"][1])), int)
  raise ValueError(f"unknown detection order {order!r}; known: {', '.join(ORDERS)}")


def prompt_and_target(task: str, record, tokenizer, vocab: Vocab, rng: np.random.Generator,
                      caption: Optional[str] = None, order: str = "random"):
  """(prompt ids, target ids, ground truth for the evaluators) of one task on one scene."""
  objects = scene_qa.scene_objects(record)
  if task == "caption":
    caps = record["captions"]
    text = caption if caption is not None else caps[int(rng.integers(len(caps)))]
    text = text.decode() if isinstance(text, bytes) else str(text)
    return vocab.prompt(task, tokenizer), pieces(tokenizer, text), {}
  if task == "vqa":
    question, answer = scene_qa.ask(objects, scene_qa.question_type(rng), rng)
    question = question.rstrip("?")
    return (vocab.prompt(task, tokenizer, question), pieces(tokenizer, answer),
            dict(question_string=question, answer_scores=scene_qa.answer_scores(answer)))
  if task == "grounding":
    expression, i = scene_qa.refer(objects, rng)
    box = np.asarray(objects[i]["box"], np.float32)
    return (vocab.prompt(task, tokenizer, expression), [int(t) for t in vocab.loc.encode(box)],
            dict(expression_string=expression, target_box=box))
  if task == "detection":
    names = vocab.class_ids(tokenizer)
    labels = [R.COLOUR_NAMES.index(o["colour"]) * len(R.SHAPES) + R.SHAPES.index(o["shape"])
              for o in objects]
    target = []
    for j in object_order(objects, order, rng):
      if target and vocab.object_sep is not None:
        target.append(vocab.object_sep)
      target += [int(t) for t in vocab.loc.encode(objects[j]["box"])] + names[labels[j]]
    boxes = np.zeros((R.MAX_OBJECTS, 4), np.float32)
    classes = np.full((R.MAX_OBJECTS,), -1, np.int32)
    boxes[:len(objects)] = [o["box"] for o in objects]
    classes[:len(objects)] = labels
    return vocab.prompt(task, tokenizer), target, dict(gt_boxes=boxes, gt_classes=classes)
  raise ValueError(f"unknown unified task {task!r}; known: {', '.join(TASKS)}")


WORDS = ("vlx", "paligemma")


def vocab_for(handle, text_size: int, num_bins: int, words: str = "vlx",
              vocab_size: Optional[int] = None):
  """The task vocabulary: vlx's (`Vocab`: location, `sep` and task ids after the dataset's
  `text_size` ids) or an imported PaliGemma's (`PaliGemmaWords`: its tokenizer's words, its
  location tokens at `text_size`, its decoder's `vocab_size` ids)."""
  if words == "paligemma":
    if vocab_size is None:
      raise ValueError("unified tasks in PaliGemma's words need the decoder's vocab_size")
    return PaliGemmaWords.from_tokenizer(handle.tokenizer, int(vocab_size), int(text_size),
                                         int(num_bins))
  if words != "vlx":
    raise ValueError(f"unified tasks: unknown words {words!r}; known: {', '.join(WORDS)}")
  vocab = Vocab(int(text_size), int(num_bins))
  if handle.tokenizer.vocab_size > vocab.text_size:
    raise ValueError(f"unified tasks: the tokenizer has {handle.tokenizer.vocab_size} ids but "
                     f"text_size is {vocab.text_size}: location tokens would overlap text")
  return vocab


@registry.PP_OPS.register("unified_task")
def unified_task_op(handle, prompt_len: int, target_len: int, num_bins: int = 32,
                    text_size: int = 256, weights=(1.0, 1.0, 1.0, 1.0),
                    task: Optional[str] = None, isolate: bool = False, words: str = "vlx",
                    vocab_size: Optional[int] = None):
  """One task per example: drawn by `weights` (over TASKS) with the pipeline's rng, or always
  `task` (evaluation). Writes the text block (`text_block`), `task_id`, the generation prompt
  (`prompt_fields`) and the task's ground truth. `isolate`: as text_block's (a model trained
  on packed tasks is evaluated with it). `words`, `vocab_size`: as `vocab_for`'s."""
  vocab = vocab_for(handle, text_size, num_bins, words, vocab_size)
  if task is not None and task not in TASKS:
    raise ValueError(f"unified_task: unknown task {task!r}; known: {', '.join(TASKS)}")
  weights = (1.0,) * len(TASKS) if weights is None else tuple(weights)
  w = np.asarray(weights, np.float64)
  if w.shape != (len(TASKS),) or (w < 0).any() or w.sum() <= 0:
    raise ValueError(f"unified_task: weights must be {len(TASKS)} non-negative numbers (one per "
                     f"task: {', '.join(TASKS)}), not all zero; got {weights}")
  w = w / w.sum()

  def fn(ex, rng):
    name = task or TASKS[int(rng.choice(len(TASKS), p=w))]
    caption = ex["captions"][0] if task == "caption" else None
    prompt, target, truth = prompt_and_target(name, ex, handle.tokenizer, vocab, rng, caption)
    block = text_block(prompt, target, vocab, int(prompt_len), int(target_len), isolate)
    ex.update(block, **prompt_fields(block, int(prompt_len)), **truth,
              task_id=np.int32(TASKS.index(name)))
    return ex
  return fn


unified_task_op.text_field = ("questions", "expressions")


def pack_blocks(blocks: Sequence[Dict[str, np.ndarray]]) -> Dict[str, np.ndarray]:
  """Isolated text blocks side by side, one image: `segment` (1, 2, ... per block) keeps each
  block's attention inside itself (and the image), and `text_positions` restart in every block,
  so each block is computed exactly as if it were alone with the image."""
  out = {k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]}
  out["segment"] = np.concatenate([np.full(len(b["text_in"]), i + 1, np.int32)
                                   for i, b in enumerate(blocks)])
  out["text_positions"] = np.concatenate([np.maximum(np.cumsum(b["input_mask"]) - 1, 0)
                                          for b in blocks]).astype(np.int32)
  return out


@registry.PP_OPS.register("unified_pack")
def unified_pack_op(handle, lengths, counts, num_bins: int = 32, text_size: int = 256,
                    order: str = "random"):
  """Several tasks on one image in one sequence (training): `counts[t]` blocks of task
  TASKS[t], each with its own `(prompt_len, target_len)` = `lengths[t]`, isolated and packed
  (pack_blocks). The image's tokens are computed once for all of them, and a one-word VQA
  answer pads only to its own task's length. `order`: detection targets' (object_order)."""
  vocab = vocab_for(handle, text_size, num_bins)
  if order not in ORDERS:
    raise ValueError(f"unified_pack: unknown detection order {order!r}; known: "
                     f"{', '.join(ORDERS)}")
  if len(lengths) != len(TASKS) or len(counts) != len(TASKS) or sum(counts) < 1:
    raise ValueError(f"unified_pack: lengths and counts need one entry per task "
                     f"({', '.join(TASKS)}) and at least one block")

  def fn(ex, rng):
    blocks = []
    for name, (p_len, t_len), count in zip(TASKS, lengths, counts):
      for _ in range(int(count)):
        prompt, target, _ = prompt_and_target(name, ex, handle.tokenizer, vocab, rng,
                                              order=order)
        blocks.append(text_block(prompt, target, vocab, int(p_len), int(t_len), True))
    ex.update(pack_blocks(blocks))
    return ex
  return fn


unified_pack_op.text_field = ("questions", "expressions")
