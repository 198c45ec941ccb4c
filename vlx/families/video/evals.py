"""Video-text evaluators: text<->video retrieval (`video_retrieval`) and pairwise accuracy on
temporal twins (`twins`), both with an optional frame-shuffle probe.

Ties are scored as a random tie-break would score them on average: FrameMean gives a video
and its twin (the same frames in another order) exactly the same embedding, and neither
metric may credit it with an order that a tie-break by record index would invent. So a tie
in `twins` counts one half, and a retrieval rank with `t` tied negatives is the expected rank
(`greater + t / 2`); R@K is the probability of a hit under a uniform tie-break.

`frame_shuffle=True` permutes each video's frames (a fixed permutation per record, seeded by
`seed` and the record index) before the video tower sees them: a model that reads time
loses its temporal scores under it, a time-blind one does not move.
"""

from __future__ import annotations

import collections
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from vlx import registry
from vlx.data import pipeline
from vlx.evals.common import EvalContext, SplitReader, embed, run_batched

KS = (1, 5, 10)


# ---- Ranks from similarities ---------------------------------------------------------------


def rank_counts(sims: np.ndarray, positive: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  """For each query row of `sims [Q, G]` with its correct gallery items `positive [Q, G]`
  (bool, at least one per row): how many wrong items score above the best correct one
  (`greater`) and how many score the same (`ties`)."""
  best = np.where(positive, sims, -np.inf).max(axis=1, keepdims=True)
  wrong = ~positive
  greater = ((sims > best) & wrong).sum(axis=1)
  ties = ((sims == best) & wrong).sum(axis=1)
  return greater, ties


def ranking_metrics(greater: np.ndarray, ties: np.ndarray, ks: Sequence[int] = KS,
                    prefix: str = "") -> Dict[str, float]:
  """R@K, median and mean rank (1 = first) of queries, each tie broken uniformly at random
  (in expectation): rank = greater + ties / 2 + 1, P(hit@K) = clip((K - greater) / (ties + 1))."""
  greater, ties = np.asarray(greater, np.float64), np.asarray(ties, np.float64)
  out = {f"{prefix}r{k}": float(np.clip((k - greater) / (ties + 1), 0, 1).mean()) for k in ks}
  rank = greater + ties / 2 + 1
  out[f"{prefix}median_rank"] = float(np.median(rank))
  out[f"{prefix}mean_rank"] = float(rank.mean())
  return out


def annotated_by(captions: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  """`captions [N, K]` strings -> (caption id per slot `[N * K]`, `annotates [U, N]` bool: the
  unique caption u is one of video n's captions). Two videos can share a caption word for
  word (a one-shape still scene: "a red circle"); no text tells them apart."""
  ids = {}
  flat = np.array([ids.setdefault(c, len(ids)) for c in captions.reshape(-1)], np.int64)
  annotates = np.zeros((len(ids), captions.shape[0]), bool)
  annotates[flat, np.repeat(np.arange(captions.shape[0]), captions.shape[1])] = True
  return flat, annotates


def retrieval_metrics(video: np.ndarray, text: np.ndarray, ks: Sequence[int] = KS,
                      chunk: int = 1024, captions: Optional[np.ndarray] = None
                      ) -> Dict[str, float]:
  """`video [N, D]`, `text [N, K, D]` (K captions per video) -> t2v_* (each caption finds its
  video among N) and v2t_* (each video's best-ranked own caption among N * K), with the
  similarity matrix computed `chunk` query rows at a time.

  With the caption strings `captions [N, K]`, also matched_t2v_* and matched_v2t_*: a hit is
  any video the query caption annotates word for word (any caption annotating the video).
  The plain metrics (as MSR-VTT and COCO score) count only the caption's own video, so a
  caption several videos carry caps them below 1 for a perfect model; `shared_captions` is
  the fraction of caption slots whose text annotates more than one video."""
  n, k, d = text.shape
  flat = text.reshape(n * k, d)
  owner = np.repeat(np.arange(n), k)
  positives = {"": lambda q: owner[q, None] == np.arange(n)[None, :]}
  out = {}
  if captions is not None:
    ids, annotates = annotated_by(np.asarray(captions, dtype=object))
    positives["matched_"] = lambda q: annotates[ids[q]]
    out["shared_captions"] = float((annotates.sum(axis=1)[ids] > 1).mean())
  for prefix, positive in positives.items():
    counts = {"t2v": ([], []), "v2t": ([], [])}
    for start in range(0, n * k, chunk):
      rows = np.arange(start, min(start + chunk, n * k))
      for acc, part in zip(counts["t2v"], rank_counts(flat[rows] @ video.T, positive(rows))):
        acc.append(part)
    video_positive = positive(np.arange(n * k)).T                  # [N, N * K]
    for start in range(0, n, chunk):
      rows = slice(start, start + chunk)
      for acc, part in zip(counts["v2t"], rank_counts(video[rows] @ flat.T,
                                                      video_positive[rows])):
        acc.append(part)
    for direction, (greater, ties) in counts.items():
      out.update(ranking_metrics(np.concatenate(greater), np.concatenate(ties), ks,
                                 prefix=f"{prefix}{direction}_"))
  return out


# ---- Temporal twins ------------------------------------------------------------------------


def _win(better: np.ndarray, worse: np.ndarray) -> np.ndarray:
  """1 where `better` scores above `worse`, 1/2 on a tie, 0 below."""
  return (better > worse) + 0.5 * (better == worse)


def twin_pairs(index: Sequence[int], twin: Sequence[int]) -> List[Tuple[int, int]]:
  """Positions (a, b), a < b, of the videos read whose twins were read too (`index`: record
  index of each video read; `twin`: its twin's record index, -1 for none)."""
  position = {int(r): p for p, r in enumerate(index)}
  pairs = []
  for a, t in enumerate(twin):
    b = position.get(int(t), -1)
    if b > a and int(twin[b]) == int(index[a]):
      pairs.append((a, b))
  return pairs


def twin_accuracy(video: np.ndarray, text: np.ndarray, pairs: Sequence[Tuple[int, int]],
                  concepts: Optional[Sequence[str]] = None) -> Dict[str, float]:
  """Pairwise accuracy on twins (a, b), over each caption slot k: v2t, a video scores its own
  caption above its twin's; t2v, a caption scores its own video above the twin; `accuracy`
  is their mean, also per concept of the first video of a pair (`<concept>/accuracy`)."""
  if not pairs:
    return {"num_pairs": 0}
  a, b = (np.array(x) for x in zip(*pairs))
  va, vb, ta, tb = video[a], video[b], text[a], text[b]        # [P, D], [P, K, D]
  s = lambda v, t: np.einsum("pd,pkd->pk", v, t)  # noqa: E731
  saa, sab, sba, sbb = s(va, ta), s(va, tb), s(vb, ta), s(vb, tb)
  v2t = (_win(saa, sab) + _win(sbb, sba)).mean(axis=1) / 2    # [P]
  t2v = (_win(saa, sba) + _win(sbb, sab)).mean(axis=1) / 2
  both = (v2t + t2v) / 2
  out = {"accuracy": float(both.mean()), "v2t": float(v2t.mean()), "t2v": float(t2v.mean()),
         "num_pairs": len(pairs)}
  if concepts is not None:
    groups = collections.defaultdict(list)
    for p, i in enumerate(a):
      groups[str(concepts[i])].append(p)
    for concept, members in sorted(groups.items()):
      out[f"{concept}/accuracy"] = float(both[members].mean())
  return out


# ---- Reading and embedding a split ---------------------------------------------------------


def shuffle_frames(x: np.ndarray, index: Sequence[int], seed: int) -> np.ndarray:
  """Each example's frames (axis 1) in a permutation fixed by (`seed`, its record index)."""
  out = np.empty_like(x)
  for row, i in enumerate(index):
    out[row] = x[row][np.random.default_rng([seed, int(i)]).permutation(x.shape[1])]
  return out


class VideoTextSplit:
  """The evaluators' shared pass: a split read in batches, every video embedded (frames
  shuffled if asked), then every caption; records' `kind`, `concept`, `twin` kept."""

  def __init__(self, ctx: EvalContext, split: Optional[str], limit: Optional[int],
               frame_shuffle: bool, seed: int):
    self.ctx, self.frame_shuffle, self.seed = ctx, bool(frame_shuffle), int(seed)
    self.reader = SplitReader(ctx, split or ctx.data_config.test_split, limit=limit)

  def _embed_videos(self, params, rows):
    model, index = self.ctx.model, [r["_index"] for r in rows]
    keys = ["video"] + (["frame_mask"] if "frame_mask" in rows[0] else [])
    x = pipeline.stack(rows, keys)
    if self.frame_shuffle:
      x = {k: shuffle_frames(v, index, self.seed) for k, v in x.items()}

    def fn(p, b):
      return model.apply({"params": p}, b["video"], b.get("frame_mask"), method="encode_video")
    return run_batched(self.ctx, ("encode_video", tuple(keys)), fn, params, x,
                       batch_size=self.reader.batch_size)

  def __call__(self, params) -> Dict[str, np.ndarray]:
    def batch(rows):
      meta = {k: [r.get(k, d) for r in rows]
              for k, d in (("kind", ""), ("concept", ""), ("twin", -1), ("_index", -1))}
      return self._embed_videos(params, rows), [r["captions"] for r in rows], meta

    parts = self.reader.map(batch)
    tokens, captions = pipeline.caption_tokens(self.ctx.handle.tokenizer,
                                               [c for p in parts for c in p[1]],
                                               self.ctx.data_config.max_len)
    n, k, l = tokens.shape
    text = embed(self.ctx, params, "encode_text", tokens.reshape(n * k, l)).reshape(n, k, -1)
    out = {"video": np.concatenate([p[0] for p in parts]), "text": text, "captions": captions}
    for key in ("kind", "concept", "twin", "_index"):
      out[key] = np.array([str(v) if key in ("kind", "concept") else int(v)
                           for p in parts for v in p[2][key]], dtype=object if key in (
                               "kind", "concept") else np.int64)
    return out


# ---- Evaluators ----------------------------------------------------------------------------


@registry.EVALUATORS.register("video_retrieval")
class VideoRetrieval:
  """Text<->video R@1/5/10, median and mean rank over the test split, both directions, strict
  (a caption's own video) and `matched_` (any video carrying that caption); also within each
  `kind` of video the records name (`static/...`, `temporal/...`: the gallery holds that kind
  only)."""

  def __init__(self, ctx: EvalContext, split: Optional[str] = None, limit: Optional[int] = None,
               frame_shuffle: bool = False, seed: int = 0, chunk: int = 1024):
    self.split = VideoTextSplit(ctx, split, limit, frame_shuffle, seed)
    self.chunk = int(chunk)

  def __call__(self, params):
    e = self.split(params)
    out = {**retrieval_metrics(e["video"], e["text"], chunk=self.chunk,
                               captions=e["captions"]),
           "num_videos": len(e["video"])}
    for kind in sorted({k for k in e["kind"] if k}):
      rows = e["kind"] == kind
      if rows.sum() > 1:
        for name, value in retrieval_metrics(e["video"][rows], e["text"][rows],
                                             chunk=self.chunk,
                                             captions=e["captions"][rows]).items():
          out[f"{kind}/{name}"] = value
    if self.split.reader.skipped:
      out["skipped_records"] = self.split.reader.skipped
    return out


@registry.EVALUATORS.register("twins")
class Twins:
  """Pairwise accuracy on temporal twins read together (a pair cut by `limit` is left out):
  the caption of a video ranks above its twin's caption, and the video above its twin for
  its caption; overall and per temporal concept. A time-blind model scores exactly 0.5."""

  def __init__(self, ctx: EvalContext, split: Optional[str] = None, limit: Optional[int] = None,
               frame_shuffle: bool = False, seed: int = 0):
    self.split = VideoTextSplit(ctx, split, limit, frame_shuffle, seed)

  def __call__(self, params):
    e = self.split(params)
    pairs = twin_pairs(e["_index"], e["twin"])
    out = twin_accuracy(e["video"], e["text"], pairs, e["concept"])
    if self.split.reader.skipped:
      out["skipped_records"] = self.split.reader.skipped
    return out
