"""Evaluators of the unified model: each generates its task's answers on the test split and
parses them. Captioning CIDEr (vlx/evals/captioning.py's scorer), VQA accuracy against the
answer vocabulary, grounding accuracy at IoU 0.5 (and mIoU), detection box AP / AP50 (COCO's
protocol, vlx/evals/box_ap.py; each box scored by the model's mean token probability, as
Pix2Seq does). Grounding and detection decode under their grammar (vlx/decode_constraints.py),
so every output parses; `parse_rate` reports it.

Each reads the split through `unified_task(..., task=<its task>)` with a seeded rng, so every
evaluation asks the same questions about the same images; `isolate` must be what training
used (True after `unified_pack`: the image tokens do not read the prompt).
"""

from __future__ import annotations

from typing import Dict, Optional

import jax
import numpy as np

from vlx import decode as decode_lib
from vlx import decode_constraints, registry
from vlx.data import pipeline, scene_qa
from vlx.data.loc_tokens import parse_box, parse_detections
from vlx.evals.box_ap import box_ap, box_or_class, iou_matrix
from vlx.evals.captioning import coco_caption_scores
from vlx.evals.common import EvalContext, SplitReader, run_batched
from vlx.evals.vqa_metrics import accuracy_by_type
from vlx.families.unified import generate as gen
from vlx.families.unified import tasks as T

_PROMPT = ("image", "prompt", "prompt_mask", "prompt_ar")
# Grounding targets whose box side is under this share of the image's count as small (the
# scenes' distractors are at most 0.25, their large shapes at least 0.34).
SMALL_SIDE = 0.3


class _Generative:
  task = ""
  truth = ()

  def __init__(self, ctx: EvalContext, prompt_len: int, target_len: int, num_bins: int = 32,
               text_size: int = 256, split: Optional[str] = None, limit: Optional[int] = 512,
               max_len: Optional[int] = None, method: str = "greedy", beam_size: int = 4,
               constrained: bool = True, isolate: bool = False, words: str = "vlx",
               vocab_size: Optional[int] = None, image_pp: str = "value_range(-1,1)"):
    self.ctx = ctx
    self.vocab = T.vocab_for(ctx.handle, text_size, num_bins, words, vocab_size)
    size = None if vocab_size is None else int(vocab_size)
    pp = (f"decode|{image_pp}|unified_task({int(prompt_len)}, {int(target_len)}, "
          f"{int(num_bins)}, {int(text_size)}, None, '{self.task}', {bool(isolate)}, "
          f"'{words}', {size})")
    self.reader = SplitReader(ctx, split or ctx.data_config.test_split, pp=pp, limit=limit)
    self.cfg = decode_lib.DecodeConfig(method=method, max_len=int(max_len or target_len),
                                       beam_size=int(beam_size))
    self.constraint = self.grammar() if constrained else None

  def grammar(self):
    return None

  def _tokens(self, params, data):
    fn = gen.make_generate_fn(self.ctx.model, self.cfg, self.vocab.eos, self.constraint)
    key = ("unified_generate", self.task, self.cfg, self.constraint is not None)
    rng = jax.random.key(0)
    return run_batched(self.ctx, key, lambda p, b: fn(p, *(b[k] for k in _PROMPT), rng),
                       params, {k: data[k] for k in _PROMPT}, batch_size=self.reader.batch_size)

  def generate(self, params, scored: bool = False):
    """Streams the split -> (answer ids [N, max_len], per-token log-probs or None, truth)."""
    fields = list(_PROMPT) + list(self.truth)
    logp_fn = gen.make_answer_logp_fn(self.ctx.model)

    def run(rows):
      data = pipeline.stack(rows, fields)
      ids = self._tokens(params, data)
      lp = None
      if scored:
        inputs = {**{k: data[k] for k in _PROMPT}, "answer": ids}
        lp = run_batched(self.ctx, ("unified_logp",), lambda p, b: logp_fn(
            p, *(b[k] for k in _PROMPT), b["answer"]), params, inputs,
            batch_size=self.reader.batch_size)
      return ids, lp, {k: data[k] for k in self.truth}
    ids, lps, truth = zip(*self.reader.map(run))
    join = lambda *xs: np.concatenate(xs)  # noqa: E731
    return (join(*ids), join(*lps) if scored else None,
            {k: join(*[t[k] for t in truth]) for k in self.truth})

  def text(self, ids):
    """Answer ids -> text (location and task ids have no text: they decode as nothing)."""
    size = self.vocab.text_size
    return self.ctx.handle.tokenizer.decode(np.where(ids < size, ids, 0))


@registry.EVALUATORS.register("unified_caption")
class Caption(_Generative):
  """Captioning CIDEr (and BLEU, ROUGE-L) against each image's five captions."""
  task = "caption"
  truth = ("captions",)

  def __call__(self, params) -> Dict[str, float]:
    ids, _, truth = self.generate(params)
    hyps = self.text(ids)
    refs = [[c.decode() if isinstance(c, bytes) else str(c) for c in r]
            for r in truth["captions"]]
    scores = coco_caption_scores(refs, hyps, meteor=False, spice=False)
    return {**scores, "num_images": len(hyps)}


@registry.EVALUATORS.register("unified_vqa")
class VQA(_Generative):
  """Open-ended VQA: the generated text is looked up in the answer vocabulary (anything else
  scores 0) and scored by VQA's soft accuracy, overall and per question type."""
  task = "vqa"
  truth = ("answer_scores", "question_string")

  def __call__(self, params) -> Dict[str, float]:
    ids, _, truth = self.generate(params)
    answers = [a.strip() for a in self.text(ids)]
    scores = np.concatenate([truth["answer_scores"], np.zeros((len(ids), 1), np.float32)], 1)
    unknown = scores.shape[1] - 1
    pred = np.array([scene_qa.ANSWER_INDEX.get(a, unknown) for a in answers])
    types = [scene_qa.classify_question(str(q)) for q in truth["question_string"]]
    return {**accuracy_by_type(pred, scores, types), "num_questions": len(pred),
            "in_vocabulary": float(np.mean(pred != unknown))}


@registry.EVALUATORS.register("unified_grounding")
class Grounding(_Generative):
  """Referring expressions -> 4 location tokens: accuracy at IoU >= 0.5 and mean IoU (an
  unparsable output counts as a miss), for small and large targets apart, and how often the
  box lies on another object (`grounding_scores`)."""
  task = "grounding"
  truth = ("target_box",)

  def grammar(self):
    v = self.vocab
    return decode_constraints.grounding(v.size, v.loc.start, v.num_bins, v.eos)

  def __call__(self, params) -> Dict[str, float]:
    ids, _, truth = self.generate(params)
    boxes = [parse_box(row, self.vocab.loc, self.vocab.eos) for row in ids]
    return grounding_scores(boxes, truth["target_box"])


def grounding_scores(boxes, targets) -> Dict[str, float]:
  """Parsed boxes (None: unparsable, a miss) against the target boxes [N, 4]: accuracy at IoU
  >= 0.5 and mean IoU, overall and for small and large targets apart (box side under / over
  SMALL_SIDE of the image's: where a model fails), the parse rate, and the share of parsed
  boxes disjoint from their target (IoU 0: another object named rather than a loose box)."""
  targets = np.asarray(targets, np.float32).reshape(-1, 4)
  parsed = np.array([b is not None for b in boxes])
  ious = np.array([0.0 if b is None else float(iou_matrix(b, t)[0, 0])
                   for b, t in zip(boxes, targets)])
  side = np.sqrt(np.prod(np.maximum(targets[:, 2:] - targets[:, :2], 0), axis=1))
  out = {"accuracy_iou50": float(np.mean(ious >= 0.5)), "miou": float(ious.mean()),
         "parse_rate": float(parsed.mean()), "num_expressions": len(ious)}
  if parsed.any():
    out["disjoint_rate"] = float(np.mean(ious[parsed] <= 0.0))
  for name, where in (("small", side < SMALL_SIDE), ("large", side >= SMALL_SIDE)):
    if where.any():
      out[f"accuracy_iou50_{name}"] = float(np.mean(ious[where] >= 0.5))
  return out


@registry.EVALUATORS.register("unified_detection")
class Detection(_Generative):
  """Detection as a token sequence: COCO box AP and AP50 over the scenes' colour x shape
  classes; each generated box scored by exp(mean log-prob of its tokens). Whether the misses
  are boxes or names: AP50 with the classes ignored, the share of objects found at IoU 0.5 and
  of those the share named right (`box_or_class`)."""
  task = "detection"
  truth = ("gt_boxes", "gt_classes")

  def grammar(self):
    v = self.vocab
    return decode_constraints.detection(v.size, v.loc.start, v.num_bins, v.eos,
                                        v.class_ids(self.ctx.handle.tokenizer), v.object_sep)

  def __call__(self, params) -> Dict[str, float]:
    ids, lp, truth = self.generate(params, scored=True)
    v = self.vocab
    names = v.class_ids(self.ctx.handle.tokenizer)
    gap = int(v.object_sep is not None)
    dets, gts, parsed = [], [], 0
    for row, row_lp, boxes, classes in zip(ids, lp, truth["gt_boxes"], truth["gt_classes"]):
      found = parse_detections(row, v.loc, v.eos, names, v.object_sep)
      parsed += found is not None
      found = found or []
      scores, start = [], 0
      for _, c in found:  # each object: 4 location tokens and its name's tokens (then `sep`)
        end = start + 4 + len(names[c])
        scores.append(float(np.exp(row_lp[start:end].mean())))
        start = end + gap
      dets.append((np.array([b for b, _ in found]).reshape(-1, 4), np.array(scores),
                   np.array([c for _, c in found], np.int32)))
      keep = classes >= 0
      gts.append((boxes[keep], classes[keep]))
    ap = box_ap(dets, gts)
    return {"ap": ap["ap"], "ap50": ap["ap50"], "ap75": ap["ap75"], **box_or_class(dets, gts),
            "parse_rate": parsed / len(ids), "num_images": len(ids),
            "objects_per_image": float(np.mean([len(d[2]) for d in dets]))}
