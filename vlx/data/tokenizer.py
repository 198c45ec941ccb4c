"""SentencePiece tokenizer: trained by vlx on a dataset's captions and stored beside the data."""

from __future__ import annotations

import io
import os
import re
from typing import Any, Iterable, List, Sequence

import numpy as np
import sentencepiece as spm

from vlx.token_ids import EOS_ID, PAD_ID, UNK_ID


def train_sentencepiece(texts: Iterable[str], path: str, vocab_size: int = 256,
                        model_type: str = "bpe") -> str:
  """Train a sentencepiece model on `texts` and write it to `path` (atomically).

  BPE by default: on a small closed vocabulary a unigram model with a soft vocab
  limit collapses to characters (3x longer sequences); BPE keeps whole words.
  """
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(texts), model_writer=model, vocab_size=vocab_size,
      model_type=model_type, pad_id=PAD_ID, unk_id=UNK_ID, bos_id=-1, eos_id=EOS_ID,
      hard_vocab_limit=False, character_coverage=1.0, num_threads=2,
      minloglevel=2)
  tmp = path + ".tmp"
  with open(tmp, "wb") as f:
    f.write(model.getvalue())
  os.replace(tmp, path)
  return path


class Tokenizer:
  """Text -> fixed-length int32 ids: pieces, then EOS, then padding with 0."""

  def __init__(self, path: str):
    if not os.path.exists(path):
      raise FileNotFoundError(f"no sentencepiece model at {path}")
    self.path = path
    self.sp = spm.SentencePieceProcessor(model_file=path)
    self._check_ids()

  def _check_ids(self) -> None:
    if self.sp.pad_id() != PAD_ID or self.sp.eos_id() != EOS_ID:
      raise ValueError(f"{self.path}: vlx expects pad id {PAD_ID} and eos id {EOS_ID}")

  @property
  def vocab_size(self) -> int:
    return self.sp.get_piece_size()

  @property
  def eos_id(self) -> int:
    return EOS_ID

  def encode(self, texts: Sequence[str], max_len: int) -> np.ndarray:
    out = np.zeros((len(texts), max_len), np.int32)
    # One text at a time: sentencepiece's list form starts a thread pool per call, about
    # 100x the cost of encoding a short caption (380 us vs 3.6 us measured), and the
    # pipeline calls this per record.
    eos = self.eos_id
    for i, text in enumerate(texts):
      ids = self.sp.encode(text)[:max_len - 1] + [eos]
      out[i, :len(ids)] = ids
    return out

  def decode(self, ids) -> list:
    """Ids -> text up to EOS. A model's vocabulary may be larger than the tokenizer's (a
    32,000-id text tower over a small dataset's tokenizer): ids past it decode as UNK."""
    rows = []
    size = self.vocab_size
    for row in np.asarray(ids).tolist():
      row = row[:row.index(EOS_ID)] if EOS_ID in row else row
      rows.append(self.sp.decode([t if t < size else UNK_ID for t in row if t != PAD_ID]))
    return rows


class GemmaTokenizer(Tokenizer):
  """Gemma's sentencepiece model (PaliGemma's `tokenizer.model`: `<pad>` 0, `<eos>` 1,
  `<bos>` 2, the newline and `<locNNNN>` among its pieces) as a dataset tokenizer: pieces,
  then its EOS, then padding with 0. BOS is the prompt's business
  (vlx/families/unified/tasks.py's PaliGemmaWords), not every text's."""

  def _check_ids(self) -> None:
    if self.sp.pad_id() != PAD_ID or self.sp.eos_id() < 0:
      raise ValueError(f"{self.path}: a Gemma tokenizer has pad id {PAD_ID} and an EOS")

  @property
  def eos_id(self) -> int:
    return self.sp.eos_id()

  def decode(self, ids) -> list:
    """Ids -> text up to EOS; ids past the sentencepiece model (a decoder's padded vocabulary)
    and special ids are dropped, as HF's tokenizer drops them."""
    rows, size, eos = [], self.vocab_size, self.eos_id
    for row in np.asarray(ids).tolist():
      row = row[:row.index(eos)] if eos in row else row
      rows.append(self.sp.decode([t for t in row if t < size and t != PAD_ID]))
    return rows


class SiglipTokenizer:
  """SigLIP's sentencepiece tokenizer, id for id with Hugging Face's `SiglipTokenizer`.

  The reference lowercases, drops ASCII punctuation and collapses whitespace before the
  sentencepiece model sees the text, splits special tokens out first, appends `</s>` and
  pads with `</s>` to a fixed length (the text tower reads the last position).
  """

  def __init__(self, path: str, lower: bool = True):
    import string  # pylint: disable=g-import-not-at-top
    if not os.path.exists(path):
      raise FileNotFoundError(f"no sentencepiece model at {path}")
    self.path = path
    self.sp = spm.SentencePieceProcessor(model_file=path)
    self.lower = lower
    self._punct = str.maketrans("", "", string.punctuation)
    self.unk, self.eos = "<unk>", "</s>"
    self.eos_id = self.sp.piece_to_id(self.eos)
    self.pad_id = self.eos_id
    self._specials = [self.eos, self.unk]
    self._special_split = re.compile("(" + "|".join(re.escape(s) for s in self._specials) + ")")
    self._unk_len = len(self.sp.encode(self.unk, out_type=str))

  @property
  def vocab_size(self) -> int:
    return self.sp.get_piece_size()

  def _canonicalize(self, text: str) -> str:
    text = text.lower() if self.lower else text
    return re.sub(r"\s+", " ", text.translate(self._punct)).strip()

  def _split_specials(self, text: str) -> List[str]:
    """Special tokens become their own chunks; whitespace next to them is dropped."""
    parts = self._special_split.split(text)
    out = []
    for i, part in enumerate(parts):
      if part in self._specials:
        out.append(part)
        continue
      if i + 1 < len(parts) and parts[i + 1] in self._specials:
        part = part.rstrip()
      if i > 0 and parts[i - 1] in self._specials:
        part = part.lstrip()
      if part:
        out.append(part)
    return out

  def encode_one(self, text: str) -> List[int]:
    pieces = []
    for chunk in self._split_specials("\u2581" + text.replace("\u2581", " ")):
      if chunk in self._specials:
        pieces.append(chunk)
      else:
        encoded = self.sp.encode(self.unk + self._canonicalize(chunk), out_type=str)
        pieces.extend(encoded[self._unk_len:] if len(encoded) >= self._unk_len else encoded)
    if len(pieces) > 1 and pieces[0] == "\u2581" and pieces[1] in self._specials:
      pieces = pieces[1:]
    return [self.sp.piece_to_id(p) for p in pieces]

  def encode(self, texts: Sequence[str], max_len: int = 64) -> np.ndarray:
    out = np.full((len(texts), max_len), self.pad_id, np.int32)
    for i, text in enumerate(texts):
      ids = self.encode_one(text)[:max_len - 1]
      if not ids or ids[-1] != self.eos_id:
        ids = ids + [self.eos_id]
      out[i, :len(ids)] = ids
    return out

  def decode(self, ids) -> list:
    rows = []
    for row in np.asarray(ids).tolist():
      row = row[:row.index(self.eos_id)] if self.eos_id in row else row
      rows.append(self.sp.decode(row))
    return rows


def load_tokenizer(spec) -> Any:
  """A tokenizer from a spec dict: {"type": "sentencepiece" | "siglip" | "clip_bpe" |
  "bert_wordpiece" | "paligemma", ...}.

  `clip_bpe` takes `dir` (vocab.json + merges.txt or tokenizer.json) or `bpe` (OpenAI's
  merges file as open_clip ships it), and `normalization` ("hf" or "open_clip").
  `bert_wordpiece` takes `path` (vocab.txt), `lower_case`, `strip_accents`, `add_cls`.
  """
  tok = _build_tokenizer(dict(spec))
  tok.source_spec = dict(spec)  # export copies the tokenizer's files from here
  return tok


def _build_tokenizer(spec):
  from vlx.data import clip_bpe  # pylint: disable=g-import-not-at-top
  kind = spec.pop("type")
  if kind == "sentencepiece":
    return Tokenizer(spec["path"])
  if kind == "paligemma":
    return GemmaTokenizer(spec["path"])
  if kind == "siglip":
    return SiglipTokenizer(spec["path"], lower=spec.get("lower", True))
  if kind == "clip_bpe":
    if spec.get("dir"):
      vocab, merges = clip_bpe.read_hf_vocab(spec["dir"])
    else:
      bpe = spec.get("bpe") or clip_bpe.find_open_clip_bpe()
      if not bpe:
        raise FileNotFoundError(
            "an open_clip tokenizer needs OpenAI's bpe_simple_vocab_16e6.txt.gz: install "
            "open_clip_torch or give its path as the tokenizer's `bpe`")
      vocab, merges = clip_bpe.open_clip_vocab(bpe)
    return clip_bpe.ClipBpeTokenizer(vocab, merges, spec.get("normalization", "hf"),
                                     spec.get("pad_id"))
  if kind == "bert_wordpiece":
    from vlx.data import bert_wordpiece  # pylint: disable=g-import-not-at-top
    return bert_wordpiece.BertWordPieceTokenizer(
        spec["path"], lower_case=spec.get("lower_case", True),
        strip_accents=spec.get("strip_accents"), chinese_chars=spec.get("chinese_chars", True),
        add_cls=spec.get("add_cls", True))
  raise ValueError(f"unknown tokenizer type {kind!r}; known: bert_wordpiece, clip_bpe, "
                   "paligemma, sentencepiece, siglip")
