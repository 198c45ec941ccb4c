"""BERT's WordPiece tokenizer, id for id with Hugging Face's `BertTokenizer` on a `vocab.txt`.

What an imported LXMERT / VisualBERT reads its text with (`python -m vlx.convert` copies the
checkpoint's vocab.txt beside the weights). Two stages, as BERT defines them:
  * basic tokenization: control characters (and NUL, U+FFFD) removed, whitespace made
    spaces, CJK ideographs made words of their own; for an uncased vocabulary lower-casing
    and accent stripping (NFD, combining marks dropped; `strip_accents` None follows
    `lower_case`); then the text splits on whitespace and every punctuation character
    (ASCII symbols and Unicode category P*) becomes a token;
  * WordPiece: greedy longest match first, continuation pieces prefixed `##`; a word that
    cannot be covered, or is longer than 100 characters, becomes [UNK] as a whole.
The special tokens ([PAD], [UNK], [CLS], [SEP], [MASK]) written in the text are kept as they
are. `encode` gives `[CLS] pieces [SEP]` padded with [PAD] (`add_cls=False` leaves out
[CLS]: FusionModel prepends its own), truncating the pieces so that [SEP] is kept.
"""

from __future__ import annotations

import os
import re
import unicodedata
from typing import Dict, List, Sequence

import numpy as np

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
MAX_WORD_CHARS = 100


def read_vocab(path: str) -> Dict[str, int]:
  """vocab.txt: one token a line, its id the line number (a repeated token keeps the last)."""
  with open(path, encoding="utf-8") as f:
    return {line.rstrip("\n"): i for i, line in enumerate(f)}


def _is_control(ch: str) -> bool:
  if ch in "\t\n\r":
    return False
  return unicodedata.category(ch).startswith("C")


def _is_whitespace(ch: str) -> bool:
  return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_punctuation(ch: str) -> bool:
  cp = ord(ch)
  if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
    return True
  return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
  """The CJK Unified Ideographs blocks (not Hangul, Hiragana or Katakana), as BERT's."""
  return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
          or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
          or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


class BertWordPieceTokenizer:
  """Text -> fixed-length int32 ids with a BERT vocabulary (see the module doc)."""

  def __init__(self, path: str, lower_case: bool = True, strip_accents=None,
               chinese_chars: bool = True, add_cls: bool = True):
    if not os.path.exists(path):
      raise FileNotFoundError(f"no WordPiece vocabulary at {path}")
    self.path = path
    self.vocab = read_vocab(path)
    missing = [t for t in SPECIALS if t not in self.vocab]
    if missing:
      raise ValueError(f"{path}: no {', '.join(missing)} token")
    self.inv = {i: t for t, i in self.vocab.items()}
    self.lower_case = bool(lower_case)
    self.strip_accents = self.lower_case if strip_accents is None else bool(strip_accents)
    self.chinese_chars = bool(chinese_chars)
    self.add_cls = bool(add_cls)
    self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (
        self.vocab[t] for t in SPECIALS)
    self._special_split = re.compile("(" + "|".join(re.escape(s) for s in SPECIALS) + ")")

  @property
  def vocab_size(self) -> int:
    return len(self.inv) and max(self.inv) + 1

  @property
  def eos_id(self) -> int:
    """The id that ends a text ([SEP]): what vlx's models call EOS."""
    return self.sep_id

  # ---- basic tokenization --------------------------------------------------------------
  def _normalize(self, text: str) -> str:
    out = []
    for ch in text:
      cp = ord(ch)
      if cp == 0 or cp == 0xFFFD or _is_control(ch):
        continue
      if _is_whitespace(ch):
        out.append(" ")
      elif self.chinese_chars and _is_cjk(cp):
        out.extend((" ", ch, " "))
      else:
        out.append(ch)
    text = "".join(out)
    if self.strip_accents:
      text = "".join(c for c in unicodedata.normalize("NFD", text)
                     if unicodedata.category(c) != "Mn")
    if self.lower_case:
      text = text.lower()
    return text

  def basic_tokens(self, text: str) -> List[str]:
    words = []
    for word in self._normalize(text).split():
      current = []
      for ch in word:
        if _is_punctuation(ch):
          if current:
            words.append("".join(current))
            current = []
          words.append(ch)
        else:
          current.append(ch)
      if current:
        words.append("".join(current))
    return words

  # ---- WordPiece -----------------------------------------------------------------------
  def wordpiece(self, word: str) -> List[str]:
    if len(word) > MAX_WORD_CHARS:
      return ["[UNK]"]
    pieces, start = [], 0
    while start < len(word):
      end = len(word)
      while end > start:
        piece = word[start:end] if start == 0 else "##" + word[start:end]
        if piece in self.vocab:
          break
        end -= 1
      else:
        return ["[UNK]"]
      pieces.append(piece)
      start = end
    return pieces

  def tokenize(self, text: str) -> List[str]:
    tokens = []
    for chunk in self._special_split.split(text):
      if chunk in SPECIALS:
        tokens.append(chunk)
      elif chunk:
        for word in self.basic_tokens(chunk):
          tokens.extend(self.wordpiece(word))
    return tokens

  def encode_one(self, text: str) -> List[int]:
    """The pieces' ids, without [CLS] / [SEP]."""
    return [self.vocab[t] for t in self.tokenize(text)]

  def encode(self, texts: Sequence[str], max_len: int) -> np.ndarray:
    head = [self.cls_id] if self.add_cls else []
    room = max_len - len(head) - 1
    if room < 0:
      raise ValueError(f"max_len {max_len} leaves no room for [CLS] / [SEP]")
    out = np.full((len(texts), max_len), self.pad_id, np.int32)
    for i, text in enumerate(texts):
      ids = head + self.encode_one(text)[:room] + [self.sep_id]
      out[i, :len(ids)] = ids
    return out

  def decode(self, ids) -> list:
    """Ids -> text up to [SEP]; [CLS] and [PAD] dropped, `##` pieces joined. Ids past the
    vocabulary (a model's own appended ids) decode as [UNK]."""
    rows = []
    for row in np.asarray(ids).tolist():
      row = row[:row.index(self.sep_id)] if self.sep_id in row else row
      tokens = [self.inv.get(t, "[UNK]") for t in row if t not in (self.pad_id, self.cls_id)]
      rows.append(" ".join(tokens).replace(" ##", ""))
    return rows
