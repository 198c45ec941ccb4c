"""CLIP's byte-level BPE tokenizer, id for id with Hugging Face's `CLIPTokenizer` or open_clip's.

Imported CLIP checkpoints only work with the exact ids they were trained on, so this is a
faithful re-implementation (no torch, no `tokenizers`): text is normalized the way the
reference does it, split by CLIP's pattern, mapped to byte symbols, merged by rank with an
end-of-word marker, and framed as `<start> ... <end>` then padded.

The two references differ only in normalization and padding:
- `"hf"`: NFC, whitespace runs -> one space, per-character lowercase; pad with `<end>` (the
  pad token of OpenAI's HF tokenizers; pad ids are never read by a causal, EOT-pooled tower).
- `"open_clip"`: ftfy's `fix_text`, HTML unescape (twice), whitespace collapse, lowercase;
  pad with 0.
"""

from __future__ import annotations

import functools
import gzip
import html
import json
import os
import unicodedata
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

END_OF_WORD = "</w>"
HF_SPECIALS = ("<|startoftext|>", "<|endoftext|>")
OPEN_CLIP_SPECIALS = ("<start_of_text>", "<end_of_text>")
_WORD_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


@functools.lru_cache()
def bytes_to_unicode() -> Dict[int, str]:
  """GPT-2's reversible byte -> printable character table (no whitespace/control symbols)."""
  printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
               + list(range(ord("®"), ord("ÿ") + 1)))
  # Insertion order matters: the vocabulary lists the printable bytes first.
  table = {b: chr(b) for b in printable}
  extra = 0
  for b in range(256):
    if b not in table:
      table[b] = chr(256 + extra)
      extra += 1
  return table


def open_clip_vocab(bpe_path: str, specials: Sequence[str] = HF_SPECIALS
                    ) -> Tuple[Dict[str, int], List[Tuple[str, str]]]:
  """Vocabulary and merges from OpenAI's `bpe_simple_vocab_16e6.txt.gz` (as open_clip ships it).

  Ids: 256 byte symbols, the same with the end-of-word marker, one per merge, then the
  start and end tokens (49406 and 49407 for the standard file).
  """
  with gzip.open(bpe_path, "rt", encoding="utf-8") as f:
    lines = f.read().split("\n")
  merges = [tuple(line.split()) for line in lines[1:49152 - 256 - 2 + 1]]
  symbols = list(bytes_to_unicode().values())
  vocab = symbols + [s + END_OF_WORD for s in symbols] + ["".join(m) for m in merges]
  vocab += list(specials)
  return {tok: i for i, tok in enumerate(vocab)}, merges


def find_open_clip_bpe() -> Optional[str]:
  """The vocabulary file of an installed open_clip package, located without importing it."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.find_spec("open_clip")
  if spec is None or not spec.submodule_search_locations:
    return None
  path = os.path.join(list(spec.submodule_search_locations)[0], "bpe_simple_vocab_16e6.txt.gz")
  return path if os.path.exists(path) else None


def read_hf_vocab(directory: str) -> Tuple[Dict[str, int], List[Tuple[str, str]]]:
  """vocab.json + merges.txt, or the BPE model inside tokenizer.json (written by save_pretrained)."""
  vocab_path, merges_path = (os.path.join(directory, n) for n in ("vocab.json", "merges.txt"))
  if os.path.exists(vocab_path) and os.path.exists(merges_path):
    with open(vocab_path, encoding="utf-8") as f:
      vocab = json.load(f)
    with open(merges_path, encoding="utf-8") as f:
      lines = [l for l in f.read().split("\n") if l and not l.startswith("#version")]
    return vocab, [tuple(l.split()) for l in lines]
  tok_path = os.path.join(directory, "tokenizer.json")
  if os.path.exists(tok_path):
    with open(tok_path, encoding="utf-8") as f:
      model = json.load(f)["model"]
    vocab = dict(model["vocab"])
    merges = [tuple(m.split()) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    with open(tok_path, encoding="utf-8") as f:  # added (special) tokens live outside the model
      for added in json.load(f).get("added_tokens", []):
        vocab.setdefault(added["content"], added["id"])
    return vocab, merges
  raise FileNotFoundError(f"{directory}: no vocab.json + merges.txt or tokenizer.json "
                          "(a CLIP tokenizer needs one of them)")


class ClipBpeTokenizer:
  """Text -> `[B, max_len]` int32 ids framed as `<start> tokens <end>` (see module doc)."""

  def __init__(self, vocab: Dict[str, int], merges: Iterable[Tuple[str, str]],
               normalization: str = "hf", pad_id: Optional[int] = None):
    import regex  # pylint: disable=g-import-not-at-top
    if normalization not in ("hf", "open_clip"):
      raise ValueError(f"unknown CLIP normalization {normalization!r}; known: hf, open_clip")
    self.normalization = normalization
    self.encoder = dict(vocab)
    self.decoder = {i: t for t, i in self.encoder.items()}
    self.ranks = {tuple(m): i for i, m in enumerate(merges)}
    specials = HF_SPECIALS if HF_SPECIALS[0] in self.encoder else OPEN_CLIP_SPECIALS
    missing = [s for s in specials if s not in self.encoder]
    if missing:
      raise ValueError(f"CLIP vocabulary lacks the special tokens {missing}")
    self.sot_id, self.eot_id = (self.encoder[s] for s in specials)
    # In the text itself, each reference recognizes its own spelling of the special tokens.
    text_specials = HF_SPECIALS if normalization == "hf" else OPEN_CLIP_SPECIALS
    self._special_text = {t: self.encoder[s] for t, s in zip(text_specials, specials)}
    alternatives = "|".join(regex.escape(t) for t in text_specials)
    self._pattern = regex.compile(f"{alternatives}|{_WORD_PATTERN}",
                                  0 if normalization == "hf" else regex.IGNORECASE)
    self._whitespace = regex.compile(r"\s+")
    self.pad_id = (self.eot_id if normalization == "hf" else 0) if pad_id is None else pad_id
    self._bytes = bytes_to_unicode()
    self._byte_decoder = {c: b for b, c in self._bytes.items()}
    self._cache: Dict[str, List[int]] = {}

  @property
  def vocab_size(self) -> int:
    return max(self.encoder.values()) + 1

  @property
  def eos_id(self) -> int:
    return self.eot_id

  def normalize(self, text: str) -> str:
    if self.normalization == "hf":
      text = unicodedata.normalize("NFC", text)
      text = self._whitespace.sub(" ", text)
      return "".join(c.lower() for c in text)  # per character, as the Rust normalizer does
    import ftfy  # pylint: disable=g-import-not-at-top
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return " ".join(text.split()).strip().lower()

  def _bpe(self, word: str) -> List[int]:
    """One pre-token -> ids, merging the lowest-ranked adjacent pair until none is known."""
    if word in self._cache:
      return self._cache[word]
    symbols = [self._bytes[b] for b in word.encode("utf-8")]
    parts = symbols[:-1] + [symbols[-1] + END_OF_WORD]
    while len(parts) > 1:
      pairs = {(a, b) for a, b in zip(parts[:-1], parts[1:])}
      best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
      if best not in self.ranks:
        break
      merged, i = [], 0
      while i < len(parts):
        if i < len(parts) - 1 and (parts[i], parts[i + 1]) == best:
          merged.append(parts[i] + parts[i + 1])
          i += 2
        else:
          merged.append(parts[i])
          i += 1
      parts = merged
    ids = [self.encoder[p] for p in parts]
    if len(self._cache) < 100_000:
      self._cache[word] = ids
    return ids

  def encode_one(self, text: str) -> List[int]:
    """Unframed ids of one text."""
    ids = []
    for piece in self._pattern.findall(self.normalize(text)):
      special = self._special_text.get(piece if self.normalization == "hf" else piece.lower())
      ids.extend([special] if special is not None else self._bpe(piece))
    return ids

  def encode(self, texts: Sequence[str], max_len: int = 77) -> np.ndarray:
    out = np.full((len(texts), max_len), self.pad_id, np.int32)
    for i, text in enumerate(texts):
      ids = [self.sot_id] + self.encode_one(text)[:max_len - 2] + [self.eot_id]
      out[i, :len(ids)] = ids
    return out

  def decode(self, ids) -> List[str]:
    rows = []
    for row in np.asarray(ids).tolist():
      row = row[1:] if row and row[0] == self.sot_id else row
      row = row[:row.index(self.eot_id)] if self.eot_id in row else row
      text = "".join(self.decoder.get(t, "") for t in row)
      # Words end at the end-of-word marker; inside a word, symbols map back to bytes.
      words = [bytes(self._byte_decoder[c] for c in w if c in self._byte_decoder)
               for w in text.split(END_OF_WORD)]
      rows.append(" ".join(w.decode("utf-8", "replace") for w in words if w).strip())
    return rows
