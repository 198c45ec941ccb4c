"""SentencePiece tokenizer: trained by vlx on a dataset's captions and stored beside the data."""

from __future__ import annotations

import io
import os
from typing import Iterable, Sequence

import numpy as np
import sentencepiece as spm

PAD_ID, UNK_ID, EOS_ID = 0, 1, 2


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
    if self.sp.pad_id() != PAD_ID or self.sp.eos_id() != EOS_ID:
      raise ValueError(f"{path}: vlx expects pad id {PAD_ID} and eos id {EOS_ID}")

  @property
  def vocab_size(self) -> int:
    return self.sp.get_piece_size()

  @property
  def eos_id(self) -> int:
    return EOS_ID

  def encode(self, texts: Sequence[str], max_len: int) -> np.ndarray:
    out = np.zeros((len(texts), max_len), np.int32)
    for i, ids in enumerate(self.sp.encode(list(texts))):
      ids = ids[:max_len - 1] + [EOS_ID]
      out[i, :len(ids)] = ids
    return out

  def decode(self, ids) -> list:
    rows = []
    for row in np.asarray(ids).tolist():
      row = row[:row.index(EOS_ID)] if EOS_ID in row else row
      rows.append(self.sp.decode([t for t in row if t != PAD_ID]))
    return rows
