"""Captioning evaluator: generate on the test split, score with pycocoevalcap, show a gallery.

Scores are the COCO caption metrics (BLEU-1..4, ROUGE-L, CIDEr-D; METEOR and SPICE
need Java, SPICE also its Stanford models, and are skipped with a message when
missing: nothing is downloaded). Every decoding method in `methods` is scored:
`captioning/<method>_<metric>`; the first method's scores are also the headline
`captioning/<metric>` keys. With a workdir, writes (and at each evaluation rewrites)
`captions.jsonl` and `captions.html`, a gallery of images with generated and
reference captions. Reads the dataset's image key (`handle.image_key`): a video dataset's
`video`, with `frame_mask` when its clips are padded.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import os
import re
import shutil
from typing import Dict, List, Optional, Sequence

import jax
import numpy as np

from vlx import decode as decode_lib
from vlx import registry
from vlx.data import pipeline
from vlx.evals.common import EvalContext, SplitReader, run_batched

_PUNCT = re.compile(r"[^a-z0-9' ]+")


def simple_tokenize(text: str) -> str:
  """PTB-style normalisation without Java: lower case, punctuation dropped."""
  return " ".join(_PUNCT.sub(" ", text.lower()).split())


def _tokenize_all(gts: Dict[int, List[str]], res: Dict[int, List[str]]):
  if shutil.which("java"):
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer  # pylint: disable=g-import-not-at-top
    tok = PTBTokenizer()
    wrap = lambda d: {k: [{"caption": c} for c in v] for k, v in d.items()}  # noqa: E731
    return tok.tokenize(wrap(gts)), tok.tokenize(wrap(res))
  norm = lambda d: {k: [simple_tokenize(c) for c in v] for k, v in d.items()}  # noqa: E731
  return norm(gts), norm(res)


def coco_caption_scores(references: Sequence[Sequence[str]], hypotheses: Sequence[str],
                        meteor: bool = True, spice: bool = True) -> Dict[str, float]:
  """COCO caption metrics of hypotheses[i] against references[i] (several each)."""
  from pycocoevalcap.bleu.bleu import Bleu  # pylint: disable=g-import-not-at-top
  from pycocoevalcap.cider.cider import Cider  # pylint: disable=g-import-not-at-top
  from pycocoevalcap.rouge.rouge import Rouge  # pylint: disable=g-import-not-at-top
  gts = {i: list(r) for i, r in enumerate(references)}
  res = {i: [h if h.strip() else "<empty>"] for i, h in enumerate(hypotheses)}
  gts, res = _tokenize_all(gts, res)
  res = {k: [v[0] if v and v[0] else "empty"] for k, v in res.items()}
  scorers = [(Bleu(4), ["bleu1", "bleu2", "bleu3", "bleu4"]), (Rouge(), ["rouge_l"]),
             (Cider(), ["cider"])]
  java = shutil.which("java") is not None
  if meteor and java:
    from pycocoevalcap.meteor.meteor import Meteor  # pylint: disable=g-import-not-at-top
    scorers.append((Meteor(), ["meteor"]))
  elif meteor:
    logging.warning("captioning: METEOR skipped (needs Java)")
  if spice:
    import pycocoevalcap.spice as spice_pkg  # pylint: disable=g-import-not-at-top
    lib = os.path.join(os.path.dirname(spice_pkg.__file__), "lib")
    if java and os.path.exists(os.path.join(lib, "stanford-corenlp-3.6.0.jar")):
      from pycocoevalcap.spice.spice import Spice  # pylint: disable=g-import-not-at-top
      scorers.append((Spice(), ["spice"]))
    else:
      logging.warning("captioning: SPICE skipped (needs Java and the Stanford CoreNLP 3.6.0 "
                      "jars in %s; vlx never downloads them)", lib)
  out = {}
  for scorer, names in scorers:
    score, _ = scorer.compute_score(gts, res)
    for name, value in zip(names, score if isinstance(score, list) else [score]):
      out[name] = float(value)
  return out


def _png_data_uri(image: np.ndarray) -> str:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  arr = np.asarray(image, np.float32)
  if arr.min() < 0:  # [-1, 1] model input back to pixels
    arr = (arr + 1.0) * 127.5
  buf = io.BytesIO()
  Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).resize((128, 128), 0).save(
      buf, format="PNG")
  return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def write_gallery(path: str, images, generated: Dict[str, List[str]], references, title: str):
  """A self-contained HTML page: image, each method's caption, the references."""
  rows = []
  for i, image in enumerate(images):
    gen = "".join(f"<div><b>{html.escape(m)}</b>: {html.escape(c[i])}</div>"
                  for m, c in generated.items())
    refs = "".join(f"<li>{html.escape(r)}</li>" for r in references[i])
    rows.append(f'<tr><td><img src="{_png_data_uri(image)}" width="128"></td>'
                f"<td>{gen}<ul style='color:#666'>{refs}</ul></td></tr>")
  with open(path, "w") as f:
    f.write(f"<html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
            f"<body><h3>{html.escape(title)}</h3><table>{''.join(rows)}</table></body></html>")


@registry.EVALUATORS.register("captioning")
class Captioning:
  """Captions the test split with each decoding method and scores them."""

  def __init__(self, ctx: EvalContext, split: Optional[str] = None, methods=("greedy",),
               beam_size: int = 4, length_penalty: float = 0.6, max_len: int = 32,
               temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
               gallery: int = 16, limit=None, meteor: bool = True, spice: bool = True):
    self.ctx = ctx
    self.configs = {m: decode_lib.DecodeConfig(
        method=m, max_len=int(max_len), beam_size=int(beam_size),
        length_penalty=float(length_penalty), temperature=float(temperature),
        top_k=int(top_k), top_p=float(top_p)) for m in methods}
    self.gallery, self.meteor, self.spice = int(gallery), bool(meteor), bool(spice)
    self.reader = SplitReader(ctx, split or ctx.data_config.test_split, limit=limit)

  def generate_all(self, params):
    """Streams the split: {method: captions}, the references, the gallery's images."""
    tok = self.ctx.handle.tokenizer
    rng = jax.random.key(0)
    fns = {m: decode_lib.make_generate_fn(self.ctx.model, cfg, bos=tok.eos_id, eos=tok.eos_id)
           for m, cfg in self.configs.items()}
    generated = {m: [] for m in self.configs}
    references, gallery = [], []

    # The dataset's image key: `image`, or `video` (with `frame_mask` for padded clips).
    key = getattr(self.ctx.handle, "image_key", "image")

    def caption_batch(rows):
      keys = [key] + (["frame_mask"] if "frame_mask" in rows[0] else [])
      x = pipeline.stack(rows, keys)
      for m, fn in fns.items():
        ids = run_batched(self.ctx, ("generate", self.configs[m], tuple(keys)),
                          lambda p, b, fn=fn: fn(p, b[key], rng, b.get("frame_mask")), params,
                          x, pad_value=0, batch_size=self.reader.batch_size)
        generated[m].extend(tok.decode(ids))
      references.extend(list(r["captions"]) for r in rows)
      # A video's gallery picture is its middle frame.
      gallery.extend(np.array(im if im.ndim == 3 else im[im.shape[0] // 2])
                     for im in x[key][:max(0, self.gallery - len(gallery))])
    self.reader.map(caption_batch)  # one batch of images on the host at a time
    return generated, references, gallery

  def __call__(self, params):
    out = {}
    generated, references, gallery = self.generate_all(params)
    # Every image keeps its first K references (K = the smallest count), as before streaming.
    num_refs = min(len(r) for r in references)
    references = [r[:num_refs] for r in references]
    for i, (method, captions) in enumerate(generated.items()):
      scores = coco_caption_scores(references, captions, self.meteor, self.spice)
      scores["mean_words"] = float(np.mean([len(c.split()) for c in captions]))
      out.update({f"{method}_{k}": v for k, v in scores.items()})
      if i == 0:
        out.update(scores)
    if self.reader.skipped:
      out["skipped_records"] = self.reader.skipped
    workdir = self.ctx.workdir
    if workdir and jax.process_index() == 0:
      with open(os.path.join(workdir, "captions.jsonl"), "w") as f:
        for j, refs in enumerate(references):
          f.write(json.dumps({"index": j, **{m: c[j] for m, c in generated.items()},
                              "references": refs}) + "\n")
      n = min(len(gallery), len(references))
      if n:
        write_gallery(os.path.join(workdir, "captions.html"), gallery[:n],
                      {m: c[:n] for m, c in generated.items()}, references[:n],
                      f"vlx captions: {', '.join(generated)}")
    return out
