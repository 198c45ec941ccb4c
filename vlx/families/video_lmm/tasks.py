"""The reasoning videos as prefix-LM examples: the video's frame tokens and the question are
the prefix, the response the suffix (scored alone), in one of three formats:

  cot      `<think>` the program's trace `</think><answer>` the answer `</answer>`
  answer   `<answer>` the answer `</answer>` (answer-only SFT, and the RL stage's prompts)
  caption  no question: the video's description (every named shape and when it is seen),
           the pretraining task

Uses the unified family's text block (vlx/families/unified/tasks.py: a task token, the
question, `sep`, the response, EOS; or, for an imported PaliGemma, `<bos>answer en` + the
question + the newline, the response, its EOS), so the Gemma-style decoder, the KV-cached
generator and the `prefix_lm` objective are the unified model's own.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from vlx import registry
from vlx.data import pp_ops
from vlx.families.unified import tasks as UT

RESPONSES = ("cot", "answer", "caption")
# Ids per answer / option text in the truth fields a rollout stage verifies against.
TRUTH_LEN = 12


def response_text(ex, response: str) -> str:
  """The response of `ex` (a decoded record) in the given format."""
  if response == "caption":
    return pp_ops.to_str(ex["caption"])
  answer = f"<answer>{pp_ops.to_str(ex['answer'])}</answer>"
  if response == "answer":
    return answer
  return f"<think>{pp_ops.to_str(ex['thought'])}</think>{answer}"


@registry.PP_OPS.register("reasoning_qa")
def reasoning_qa_op(handle, prompt_len: int, target_len: int, response: str = "cot",
                    text_size: int = 256, words: str = "vlx", vocab_size: Optional[int] = None):
  """Writes the text block (`text_in`, `mask_ar`, `input_mask`, `targets`, `loss_mask`), the
  generation prompt (`prompt`, `prompt_mask`, `prompt_ar`); the prefix-LM reads `video`
  [T, H, W, 3] frame by frame. Also the answer key as numbers (`truth_fields`), what a rollout
  stage inside the jitted step hands the verifiers. `words`: vlx's task tokens after the
  dataset's `text_size` ids, or an imported PaliGemma's (`words_for`)."""
  if response not in RESPONSES:
    raise ValueError(f"reasoning_qa: unknown response format {response!r}; known: "
                     f"{', '.join(RESPONSES)}")
  vocab = words_for(handle, text_size, words, vocab_size)
  task = "caption" if response == "caption" else "vqa"

  def fn(ex, rng):
    del rng
    question = "" if response == "caption" else pp_ops.to_str(ex["question"])
    prompt = vocab.prompt(task, handle.tokenizer, question)
    target = UT.pieces(handle.tokenizer, response_text(ex, response))
    block = UT.text_block(prompt, target, vocab, int(prompt_len), int(target_len))
    ex.update(block, **UT.prompt_fields(block, int(prompt_len)))
    ex.update(truth_fields(ex, handle.tokenizer))
    return ex
  return fn


def words_for(handle, text_size: int, words: str = "vlx", vocab_size: Optional[int] = None):
  """The prompt words, `sep` and EOS of the questions: vlx's (a task token after the dataset's
  `text_size` ids, no location tokens) or an imported PaliGemma's (`<bos>caption en` /
  `<bos>answer en QUESTION`, the newline, its EOS; `text_size` is its `<loc0000>` id, below
  which every id is text): unified/tasks.py's two vocabularies."""
  return UT.vocab_for(handle, text_size, 1024 if words == "paligemma" else 0, words,
                      vocab_size)


def vocab_size(text_size: int) -> int:
  """The decoder's vocabulary for a text vocabulary of `text_size` (no location tokens)."""
  return UT.Vocab(int(text_size), 0).size


def lengths(handle, split: str = "cot", limit: int = 2_000, text_size: int = 256,
            words: str = "vlx", vocab_size: Optional[int] = None):
  """The longest prompt (the task token + question, or PaliGemma's `<bos>answer en` + question)
  and CoT response or caption in `split`, in pieces (EOS and `sep` excluded): what a config's
  prompt and target lengths must cover. `text_size`, `words`, `vocab_size`: the op's."""
  vocab = words_for(handle, text_size, words, vocab_size)
  source = handle.split(split)
  p = t = 0
  for i in range(min(len(source), limit)):
    r = {k: (v if k == "video" else pp_ops.to_str(v) if np.ndim(v) == 0 else v)
         for k, v in source[i].items()}
    p = max(p, len(vocab.prompt("vqa", handle.tokenizer, r["question"])))
    t = max(t, *(len(UT.pieces(handle.tokenizer, response_text(r, f)))
                 for f in ("cot", "caption")))
  return p, t


def _ids(tokenizer, text: str) -> np.ndarray:
  out = np.zeros((TRUTH_LEN,), np.int32)
  ids = UT.pieces(tokenizer, text)[:TRUTH_LEN] if text else []
  out[:len(ids)] = ids
  return out


def truth_fields(ex, tokenizer):
  """The answer key of a decoded record as arrays: `kind_id`, `answer_ids` [TRUTH_LEN],
  `option_ids` [2, TRUTH_LEN] (zeros where the kind has none), `span` [2] (-1 if none)."""
  from vlx.families.video_lmm import reasoning_videos as RV  # pylint: disable=g-import-not-at-top
  options = [pp_ops.to_str(o) for o in np.atleast_1d(ex["options"])]
  return {"kind_id": np.int32(RV.KINDS.index(pp_ops.to_str(ex["kind"]))),
          "answer_ids": _ids(tokenizer, pp_ops.to_str(ex["answer"])),
          "option_ids": np.stack([_ids(tokenizer, o) for o in options]),
          "span": np.asarray(ex["span"], np.int32)}


def examples_from_truth(tokenizer, kind_id, answer_ids, option_ids, span, num_frames: int):
  """truth_fields stacked over a batch -> the verifiers' Examples (no frames)."""
  from vlx.families.video_lmm import reasoning_videos as RV  # pylint: disable=g-import-not-at-top
  answers = tokenizer.decode(np.asarray(answer_ids))
  out = []
  for i, k in enumerate(np.asarray(kind_id).tolist()):
    kind = RV.KINDS[k]
    options = tuple(o for o in tokenizer.decode(np.asarray(option_ids[i])) if o)
    s = tuple(int(x) for x in np.asarray(span[i]))
    out.append(RV.Example(frames=np.zeros((0,), np.uint8), kind=kind, question="",
                          answer=answers[i], thought="", num_frames=num_frames,
                          options=options, span=s if kind == "span" else None))
  return out
