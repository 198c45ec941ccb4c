"""VQA v2 read from its official files: questions and annotations JSON, COCO images.

Getting the data (https://visualqa.org/download.html and https://cocodataset.org/#download),
unzipped into one directory `ROOT` (the names the archives unpack to):

  ROOT/v2_OpenEnded_mscoco_train2014_questions.json   (v2_Questions_Train_mscoco.zip)
  ROOT/v2_mscoco_train2014_annotations.json           (v2_Annotations_Train_mscoco.zip)
  ROOT/v2_OpenEnded_mscoco_val2014_questions.json     (v2_Questions_Val_mscoco.zip)
  ROOT/v2_mscoco_val2014_annotations.json             (v2_Annotations_Val_mscoco.zip)
  ROOT/train2014/COCO_train2014_000000000009.jpg ...  (COCO train2014.zip)
  ROOT/val2014/COCO_val2014_000000000042.jpg ...      (COCO val2014.zip)
  optional, questions only: v2_OpenEnded_mscoco_test-dev2015_questions.json,
  v2_OpenEnded_mscoco_test2015_questions.json (v2_Questions_Test_mscoco.zip), test2015/

Splits `train`, `val`, `test-dev`, `test`: each one whose questions file is present. COCO
images elsewhere: `image_root` (holding train2014/, val2014/, test2015/). Derived files are
written to `cache_dir` (default ROOT): the answer vocabulary `vqa_v2_answers_{N}.json` and
the question tokenizer `spm_bpe_{vocab_size}.model`, both built once from the train split
(under a file lock) and reused.

Training a fusion model on it (a grid model such as ALBEF; region models also need boxes,
which VQA v2 does not have). The whole `data.source` dict is replaced, so list every key:

  python -m vlx.main --config=configs/albef.py:tiny --workdir=workdirs/albef_vqa \\
    --config.data.name=vqa_v2 \\
    --config.data.source="{'root': '/data/vqa_v2', 'num_answers': 3129, 'vocab_size': 8000}" \\
    --config.data.train_split=train --config.data.test_split=val \\
    --config.data.pp_train="decode|resize(64)|value_range(-1,1)|first_caption|tokenize(28)|vqa_v2(18)" \\
    --config.data.pp_eval="decode|resize(64)|value_range(-1,1)|first_caption|tokenize(28)|vqa_v2(18)" \\
    --config.data.keys="('image','text','question','answer_scores')" \\
    --config.model.num_answers=3129 \\
    --config.model.tasks="('itc','itm','mlm','vqa')" \\
    --config.objectives="{'itc': {'weight': 1.0}, 'itm': {'weight': 1.0}, 'mlm': {'weight': 1.0}, 'vqa': {'weight': 1.0}}" \\
    --config.evals="{}"

(`model.num_answers` is the vocabulary's length: `num_answers`, unless the train split has
fewer distinct answers. The caption of a VQA record is its question, so ITC/ITM/MLM read
questions.) No evaluator is configured: the `vqa` evaluator (vlx/families/fusion/evals.py) still
expects the scenes' data (it reads `boxes` and sorts questions by the scenes' wording); until
it does not, score VQA v2 with `vlx.data.pipeline.load_task_arrays(handle, "val", pp_eval,
("image", "question", "answer_scores"))` and `vlx.evals.vqa_metrics.vqa_accuracy` (the same
soft-score accuracy). Checked: this command trains (2 steps) on a small fake ROOT.

Records (random access, one per question): `image` (the JPEG's bytes; None with
`image_error` when the file cannot be read: `decode` then raises CorruptRecord and the
pipeline skips and counts it), `captions` ([the question]), `question_text`, `question_id`,
`image_id`, `answers` (the annotators' answers, normalized; empty without annotations),
`answer_type`, `question_type`.

Answers are normalized as the official VQA evaluation does (a subset, `normalize_answer`):
lower-case; newlines and tabs to spaces; the punctuation `;/[]"{}()=+\\_-><@`,?!` removed
(next to a space, or when the text has a digit,digit) or else replaced by a space; a period
removed unless a digit follows (2.5 stays); number words zero..ten and `none` to digits;
the articles a, an, the dropped; common apostrophe-less contractions restored (dont -> don't).

The vocabulary: the `num_answers` (3,129 as in the literature) most frequent normalized
`multiple_choice_answer`s of the train split, ties in alphabetical order. `answer_scores`
[len(vocabulary)]: min(#annotators who gave the answer / 3, 1) (the usual training target;
the official metric averages that over the ten leave-one-out subsets of annotators).
`answer`: the in-vocabulary answer the most annotators gave (ties: the more frequent in
train), or -1 when none is in the vocabulary (such questions keep all-zero scores).
"""

from __future__ import annotations

import collections
import json
import os
import re
import sys
import threading
from collections.abc import Sequence
from typing import Dict, List, Optional, Tuple

import numpy as np

from vlx import registry
from vlx.data import sources
from vlx.data.tokenizer import Tokenizer

# split -> (questions file, annotations file or None, image folder / file-name tag)
SPLITS: Dict[str, Tuple[str, Optional[str], str]] = {
    "train": ("v2_OpenEnded_mscoco_train2014_questions.json",
              "v2_mscoco_train2014_annotations.json", "train2014"),
    "val": ("v2_OpenEnded_mscoco_val2014_questions.json",
            "v2_mscoco_val2014_annotations.json", "val2014"),
    "test-dev": ("v2_OpenEnded_mscoco_test-dev2015_questions.json", None, "test2015"),
    "test": ("v2_OpenEnded_mscoco_test2015_questions.json", None, "test2015"),
}

# ---- Answer normalization (after the official VQA evaluation script) ----------------------

_PUNCT = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<",
          "@", "`", ",", "?", "!")
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")
_PERIOD_STRIP = re.compile(r"\.(?!\d)")
_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
            "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = {"a", "an", "the"}
_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldnt": "couldn't",
    "couldve": "could've", "didnt": "didn't", "doesnt": "doesn't", "dont": "don't",
    "hadnt": "hadn't", "hasnt": "hasn't", "havent": "haven't", "hes": "he's", "im": "i'm",
    "isnt": "isn't", "itd": "it'd", "itll": "it'll", "ive": "i've", "mightnt": "mightn't",
    "mustnt": "mustn't", "shes": "she's", "shouldnt": "shouldn't", "shouldve": "should've",
    "thats": "that's", "theres": "there's", "theyre": "they're", "theyve": "they've",
    "wasnt": "wasn't", "werent": "weren't", "whats": "what's", "wheres": "where's",
    "whos": "who's", "wont": "won't", "wouldnt": "wouldn't", "wouldve": "would've",
    "youd": "you'd", "youll": "you'll", "youre": "you're", "youve": "you've"}


def normalize_answer(text: str) -> str:
  """'Two.' -> '2', 'A dog!' -> 'dog', 'dont know' -> "don't know" (see the module doc)."""
  s = str(text).replace("\n", " ").replace("\t", " ").strip().lower()
  strip_all = _COMMA_STRIP.search(s) is not None
  out = s
  for p in _PUNCT:
    if strip_all or (p + " " in s) or (" " + p in s):
      out = out.replace(p, "")
    else:
      out = out.replace(p, " ")
  out = _PERIOD_STRIP.sub("", out)
  words = [_NUMBERS.get(w, w) for w in out.split()]
  words = [_CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES]
  return " ".join(words)


def answer_targets(answers: Sequence[str], index: Dict[str, int],
                   num_classes: int) -> Tuple[int, np.ndarray]:
  """(answer, answer_scores) for one question's normalized human answers (module doc)."""
  counts = collections.Counter(a for a in answers if a in index)
  scores = np.zeros(num_classes, np.float32)
  for a, n in counts.items():
    scores[index[a]] = min(n / 3.0, 1.0)
  if not counts:
    return -1, scores
  best = min(counts, key=lambda a: (-counts[a], index[a]))
  return index[best], scores


# ---- Records -----------------------------------------------------------------------------

class VqaV2Split(Sequence):
  """One split's questions as a random-access source (a plain Sequence: grain reads it).

  The JSON files are read on first use (len or indexing), once; an image is read when its
  record is."""

  def __init__(self, questions_file: str, annotations_file: Optional[str], image_dir: str,
               image_tag: str):
    self.questions_file, self.annotations_file = questions_file, annotations_file
    self.image_dir, self.image_tag = image_dir, image_tag
    self._lock = threading.Lock()
    self._data = None

  def __getstate__(self):  # picklable (worker processes): the lock stays behind
    return {k: v for k, v in self.__dict__.items() if k != "_lock"}

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._lock = threading.Lock()

  def image_path(self, image_id: int) -> str:
    return os.path.join(self.image_dir, f"COCO_{self.image_tag}_{int(image_id):012d}.jpg")

  def _load(self):
    if self._data is not None:
      return self._data
    with self._lock:
      if self._data is None:
        with open(self.questions_file) as f:
          questions = json.load(f)["questions"]
        anns = {}
        if self.annotations_file:
          with open(self.annotations_file) as f:
            anns = {a["question_id"]: a for a in json.load(f)["annotations"]}
        memo = {}  # 4.4M answers in train, far fewer distinct ones

        def norm(text):
          if text not in memo:
            memo[text] = sys.intern(normalize_answer(text))
          return memo[text]

        rows = []
        for q in questions:
          a = anns.get(q["question_id"], {})
          answers = tuple(norm(x["answer"]) for x in a.get("answers", ()))
          mc = a.get("multiple_choice_answer")
          if mc is not None:
            mc = norm(mc)
          elif answers:
            mc = collections.Counter(answers).most_common(1)[0][0]
          rows.append((q["question"], int(q["question_id"]), int(q["image_id"]), answers,
                       mc or "", sys.intern(a.get("answer_type", "")),
                       sys.intern(a.get("question_type", ""))))
        self._data = rows
    return self._data

  def __len__(self) -> int:
    return len(self._load())

  def __getitem__(self, i):
    if isinstance(i, slice):
      return [self[j] for j in range(*i.indices(len(self)))]
    question, qid, image_id, answers, mc, atype, qtype = self._load()[int(i)]
    path = self.image_path(image_id)
    image, error = None, ""
    try:
      with open(path, "rb") as f:
        image = f.read()
    except OSError as e:
      error = f"cannot read image {path}: {type(e).__name__}: {e.strerror or e}"
    return {"image": image, "image_error": error, "captions": [question],
            "question_text": question, "question_id": qid, "image_id": image_id,
            "answers": list(answers), "multiple_choice_answer": mc, "answer_type": atype,
            "question_type": qtype}

  def questions(self) -> List[str]:
    return [r[0] for r in self._load()]

  def consensus_answers(self) -> List[str]:
    """Each question's normalized `multiple_choice_answer` ('' without annotations)."""
    return [r[4] for r in self._load()]


def build_answer_vocab(train: VqaV2Split, num_answers: int) -> List[str]:
  counts = collections.Counter(a for a in train.consensus_answers() if a)
  if not counts:
    raise ValueError(f"{train.questions_file}: no answers to build a vocabulary from "
                     "(the train annotations file is needed once)")
  return [a for a, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:num_answers]]


def answer_vocab(cache_dir: str, train: Optional[VqaV2Split], num_answers: int) -> List[str]:
  """The vocabulary cached in `cache_dir`, built from `train` the first time."""
  path = os.path.join(cache_dir, f"vqa_v2_answers_{num_answers}.json")
  if not os.path.exists(path):
    if train is None:
      raise FileNotFoundError(f"no answer vocabulary at {path} and no train split to build it")
    vocab = build_answer_vocab(train, num_answers)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
      json.dump({"num_answers": num_answers, "answers": vocab,
                 "built_from": "train multiple_choice_answer, normalized"}, f)
    os.replace(tmp, path)
  with open(path) as f:
    return list(json.load(f)["answers"])


@registry.DATASETS.register("vqa_v2")
def vqa_v2_dataset(root: str = "", image_root: str = "", cache_dir: str = "",
                   num_answers: int = 3129, vocab_size: int = 8_000,
                   tokenizer: Optional[str] = None, tokenizer_questions: int = 100_000,
                   **unused) -> sources.DatasetHandle:
  """VQA v2 from the official files under `root` (or $VQA_V2_DIR); see the module doc."""
  del unused
  root = os.path.expanduser(root or os.environ.get("VQA_V2_DIR", ""))
  if not root or not os.path.isdir(root):
    raise FileNotFoundError(f"vqa_v2: no data directory {root!r}: set data.source.root "
                            "(see vlx/data/vqa_v2.py for the files it holds)")
  image_root = os.path.expanduser(image_root) if image_root else root
  cache_dir = os.path.expanduser(cache_dir) if cache_dir else root
  splits = {}
  for name, (qfile, afile, tag) in SPLITS.items():
    if os.path.exists(os.path.join(root, qfile)):
      ann = os.path.join(root, afile) if afile else None
      splits[name] = VqaV2Split(os.path.join(root, qfile),
                                ann if ann and os.path.exists(ann) else None,
                                os.path.join(image_root, tag), tag)
  if not splits:
    raise FileNotFoundError(f"vqa_v2: no questions file in {root} (expected e.g. "
                            f"{SPLITS['train'][0]})")
  train = splits.get("train")
  with sources._file_lock(os.path.join(cache_dir, ".vqa_v2.lock")):  # pylint: disable=protected-access
    vocab = answer_vocab(cache_dir, train, num_answers)
    if tokenizer:
      tok = Tokenizer(tokenizer)
    else:
      if train is None and not os.path.exists(
          os.path.join(cache_dir, f"spm_bpe_{vocab_size}.model")):
        raise FileNotFoundError("vqa_v2: the tokenizer is trained on the train questions, "
                                f"and {SPLITS['train'][0]} is not in {root}")
      tok = sources.tokenizer_beside(
          cache_dir, lambda: iter(train.questions()[:tokenizer_questions]), vocab_size)
  return sources.DatasetHandle(
      splits=splits, tokenizer=tok, image_key="image", captions_key="captions",
      label_key=None, answer_vocab=vocab,
      annotation_keys=("question_text", "question_id", "image_id", "answers", "answer_type",
                       "question_type"))


# ---- Preprocessing op (after `decode`, which passes the annotation fields through) -----

@registry.PP_OPS.register("vqa_v2")
def vqa_v2_op(handle, max_len: int):
  """`question` (token ids [max_len]), `question_string`, `answer` (int32 index into the
  dataset's answer vocabulary, -1 when no annotator's answer is in it), `answer_scores`
  (float32 [len(vocabulary)]) and `answer_type` ('yes/no', 'number', 'other'; '' without
  annotations). The caption (`text`) is left as it is."""
  if handle.answer_vocab is None:
    raise ValueError("pp op vqa_v2: this dataset has no answer vocabulary (use data.name=vqa_v2)")
  index = {a: i for i, a in enumerate(handle.answer_vocab)}
  num_classes = len(handle.answer_vocab)

  def fn(ex, rng):
    del rng
    question = str(ex["question_text"])
    answers = [str(a) for a in np.asarray(ex.get("answers", ()), dtype=object).reshape(-1)]
    answer, scores = answer_targets(answers, index, num_classes)
    ex.update(question=handle.tokenizer.encode([question], max_len)[0],
              question_string=question, answer=np.int32(answer), answer_scores=scores,
              answer_type=str(ex.get("answer_type", "")))
    return ex
  return fn
