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
from vlx.evals.common import (EvalContext, SplitReader, contrastive_scale, embed,
                               run_batched)

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
                      chunk: int = 1024, captions: Optional[np.ndarray] = None,
                      scores: Optional[np.ndarray] = None) -> Dict[str, float]:
  """`video [N, D]`, `text [N, K, D]` (K captions per video) -> t2v_* (each caption finds its
  video among N) and v2t_* (each video's best-ranked own caption among N * K), with the
  similarity matrix computed `chunk` query rows at a time.

  With the caption strings `captions [N, K]`, also matched_t2v_* and matched_v2t_*: a hit is
  any video the query caption annotates word for word (any caption annotating the video).
  The plain metrics (as MSR-VTT and COCO score) count only the caption's own video, so a
  caption several videos carry caps them below 1 for a perfect model; `shared_captions` is
  the fraction of caption slots whose text annotates more than one video.

  `scores [N, N * K]` gives the similarities when a text's embedding depends on the video it
  meets (X-CLIP's prompts; `text` then only gives the shape); by default they are the dot
  products of `video` and `text`, computed here."""
  n, k, d = text.shape
  flat = text.reshape(n * k, d)
  t2v_scores = (lambda q: scores[:, q].T) if scores is not None else (  # noqa: E731
      lambda q: flat[q] @ video.T)
  v2t_scores = (lambda q: scores[q]) if scores is not None else (  # noqa: E731
      lambda q: video[q] @ flat.T)
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
      for acc, part in zip(counts["t2v"], rank_counts(t2v_scores(rows), positive(rows))):
        acc.append(part)
    video_positive = positive(np.arange(n * k)).T                  # [N, N * K]
    for start in range(0, n, chunk):
      rows = slice(start, start + chunk)
      for acc, part in zip(counts["v2t"], rank_counts(v2t_scores(rows),
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
                  concepts: Optional[Sequence[str]] = None,
                  scores: Optional[np.ndarray] = None) -> Dict[str, float]:
  """Pairwise accuracy on twins (a, b), over each caption slot k: v2t, a video scores its own
  caption above its twin's; t2v, a caption scores its own video above the twin; `accuracy`
  is their mean, also per concept of the first video of a pair (`<concept>/accuracy`).
  `scores [N, N, K]` (video i, caption k of video j) replaces the dot products of `video`
  and `text` where a text's embedding depends on the video (X-CLIP)."""
  if not pairs:
    return {"num_pairs": 0}
  a, b = (np.array(x) for x in zip(*pairs))
  if scores is not None:
    s = lambda v, t: scores[v, t]  # noqa: E731
  else:
    s = lambda v, t: np.einsum("pd,pkd->pk", video[v], text[t])  # noqa: E731
  saa, sab, sba, sbb = s(a, a), s(a, b), s(b, a), s(b, b)
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
    # A model whose text embedding depends on the video (X-CLIP's prompts) scores pairs with
    # `video_text_similarity`; the others by dot products of independent embeddings, and a
    # model with a cross-encoder (`itm_scores`) re-ranks those (`rerank`).
    self.conditioned = hasattr(ctx.model, "video_text_similarity")
    self.reranks = hasattr(ctx.model, "itm_scores")

  def _embed_videos(self, params, rows):
    """-> (the model's video outputs for `rows`, their frame mask as the model saw it, or
    None)."""
    model, index = self.ctx.model, [r["_index"] for r in rows]
    keys = ["video"] + (["frame_mask"] if "frame_mask" in rows[0] else [])
    x = pipeline.stack(rows, keys)
    if self.frame_shuffle:
      x = {k: shuffle_frames(v, index, self.seed) for k, v in x.items()}

    method = "video_features" if self.conditioned or self.reranks else "encode_video"

    def fn(p, b):
      return model.apply({"params": p}, b["video"], b.get("frame_mask"), method=method)
    return (run_batched(self.ctx, (method, tuple(keys)), fn, params, x,
                        batch_size=self.reader.batch_size), x.get("frame_mask"))

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
    text = embed(self.ctx, params, "text_features" if self.conditioned else "encode_text",
                 tokens.reshape(n * k, l)).reshape(n, k, -1)
    out = {"text": text, "captions": captions, "tokens": tokens}
    if self.conditioned or self.reranks:
      out["video"] = np.concatenate([p[0][0][0] for p in parts])
      out["context"] = np.concatenate([p[0][0][1] for p in parts])
      if parts[0][0][1] is not None:  # the cross-encoder reads the real frames only
        out["frame_mask"] = np.concatenate([p[0][1] for p in parts])
    else:
      out["video"] = np.concatenate([p[0][0] for p in parts])
    for key in ("kind", "concept", "twin", "_index"):
      out[key] = np.array([str(v) if key in ("kind", "concept") else int(v)
                           for p in parts for v in p[2][key]], dtype=object if key in (
                               "kind", "concept") else np.int64)
    return out


  def scores(self, params, e, videos: np.ndarray, texts_of: np.ndarray) -> np.ndarray:
    """`[len(videos), len(texts_of), K]`: video i with caption k of video j, for a model
    whose texts depend on the video (`video_text_similarity`), `chunk` texts at a time."""
    model, text = self.ctx.model, e["text"][texts_of]
    k, chunk = text.shape[1], 256
    flat = text.reshape(-1, text.shape[-1])

    def fn(p, b):
      weights, t = p
      return model.apply({"params": weights}, b["video"], b["context"], t,
                         method="video_text_similarity")
    columns = []
    for start in range(0, len(flat), chunk):
      t = flat[start:start + chunk]
      pad = chunk - len(t)
      t = np.concatenate([t, np.zeros((pad,) + t.shape[1:], t.dtype)]) if pad else t
      s = run_batched(self.ctx, ("video_text_similarity", chunk), fn, (params, t),
                      {"video": e["video"][videos], "context": e["context"][videos]},
                      batch_size=self.reader.batch_size)
      columns.append(s[:, :chunk - pad])
    return np.concatenate(columns, axis=1).reshape(len(videos), len(texts_of), k)

  def match(self, params, e, videos: np.ndarray, texts: np.ndarray) -> np.ndarray:
    """The cross-encoder's re-ranking score of video `videos[i]` with caption `texts[i]` (an
    index into the N * K captions): its match log-odds plus ITC's logit (the cosine times
    ITC's scale), as the fusion encoders' `itm_itc` ranks: the product of the two models'
    odds, so ITC breaks the ties the cross-encoder is unsure about."""
    model = self.ctx.model
    tokens = e["tokens"].reshape(-1, e["tokens"].shape[-1])
    # Each pair is scored once per reading of the split (galleries overlap: all, per kind).
    cache = e.setdefault("_match_cache", {})
    keys = videos.astype(np.int64) * len(tokens) + texts
    todo = np.unique(keys[[k not in cache for k in keys.tolist()]])
    if len(todo):
      v, t = todo // len(tokens), todo % len(tokens)
      inputs = {"frames": e["context"][v], "text": tokens[t]}
      if "frame_mask" in e:
        inputs["frame_mask"] = e["frame_mask"][v]

      def fn(p, b):
        return model.apply({"params": p}, b, method="itm_scores")
      scores = run_batched(self.ctx, ("itm_scores", tuple(sorted(inputs))), fn, params, inputs,
                           batch_size=max(self.reader.batch_size, 256))
      cache.update(zip(todo.tolist(), np.asarray(scores, np.float64).tolist()))
    log_odds = np.array([cache[k] for k in keys.tolist()])
    itc = np.einsum("pd,pd->p", e["video"][videos],
                    e["text"].reshape(-1, e["text"].shape[-1])[texts])
    return log_odds + contrastive_scale(params) * itc

  def reranked(self, params, e, gallery: np.ndarray, k: int) -> np.ndarray:
    """Text->video scores `[len(gallery), len(gallery) * K]` (the layout `retrieval_metrics`
    takes) of the videos `gallery` and their captions: ITC's logits, with each caption's top
    `k` videos by ITC re-scored by `match` and placed above the rest."""
    n, per = len(gallery), e["text"].shape[1]
    queries = (gallery[:, None] * per + np.arange(per)).reshape(-1)          # flat caption ids
    flat = e["text"].reshape(-1, e["text"].shape[-1])
    sims = contrastive_scale(params) * (flat[queries] @ e["video"][gallery].T).astype(np.float64)
    k = min(int(k), n)
    top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    scores = self.match(params, e, gallery[top.reshape(-1)], np.repeat(queries, k))
    # Above every ITC logit (at most the scale, 100), in the cross-encoder's order.
    np.put_along_axis(sims, top, 1e6 + scores.reshape(-1, k).astype(np.float64), axis=1)
    return sims.T


# ---- Evaluators ----------------------------------------------------------------------------


@registry.EVALUATORS.register("video_retrieval")
class VideoRetrieval:
  """Text<->video R@1/5/10, median and mean rank over the test split, both directions, strict
  (a caption's own video) and `matched_` (any video carrying that caption); also within each
  `kind` of video the records name (`static/...`, `temporal/...`: the gallery holds that kind
  only)."""

  def __init__(self, ctx: EvalContext, split: Optional[str] = None, limit: Optional[int] = None,
               frame_shuffle: bool = False, seed: int = 0, chunk: int = 1024, k: int = 16):
    self.split = VideoTextSplit(ctx, split, limit, frame_shuffle, seed)
    self.chunk = int(chunk)
    self.k = int(k)  # ITC's shortlist per caption that a cross-encoder re-ranks

  def _metrics(self, params, e, rows: np.ndarray, scores) -> Dict[str, float]:
    """The metrics of the gallery `rows` (video indices); `scores [N, N * K]` as
    `retrieval_metrics` takes them, or None."""
    n, per = len(e["video"]), e["text"].shape[1]
    sub = None
    if scores is not None:
      sub = scores.reshape(n, n, per)[np.ix_(rows, rows)].reshape(len(rows), -1)
    out = retrieval_metrics(e["video"][rows], e["text"][rows], chunk=self.chunk,
                            captions=e["captions"][rows], scores=sub)
    if self.split.reranks:
      # Text->video re-ranked within this gallery; ITC's text->video kept under `itc/`.
      reranked = retrieval_metrics(e["video"][rows], e["text"][rows], chunk=self.chunk,
                                   captions=e["captions"][rows],
                                   scores=self.split.reranked(params, e, rows, self.k))
      for name, value in list(out.items()):
        if "t2v_" in name:
          out[f"itc/{name}"], out[name] = value, reranked[name]
    return out

  def __call__(self, params):
    e = self.split(params)
    n = len(e["video"])
    scores = None
    if self.split.conditioned:
      everyone = np.arange(n)
      scores = self.split.scores(params, e, everyone, everyone).reshape(n, -1)
    out = {**self._metrics(params, e, np.arange(n), scores), "num_videos": n}
    if self.split.reranks:
      out["rerank_k"] = min(self.k, n)
    for kind in sorted({k for k in e["kind"] if k}):
      rows = np.flatnonzero(e["kind"] == kind)
      if len(rows) > 1:
        for name, value in self._metrics(params, e, rows, scores).items():
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
    if self.split.conditioned and pairs:
      # Score only the videos in pairs, each with its own and its twin's captions.
      members = np.unique(np.array(pairs).reshape(-1))
      where = {int(v): i for i, v in enumerate(members)}
      scores = self.split.scores(params, e, members, members)
      concepts = e["concept"][members]
      out = twin_accuracy(None, None, [(where[a], where[b]) for a, b in pairs], concepts,
                          scores=scores)
    elif self.split.reranks and pairs:
      # Each caption of a pair against both videos, scored by the cross-encoder (+ ITC); ITC
      # alone kept under `itc/`.
      out = twin_accuracy(None, None, pairs, e["concept"],
                          scores=self._matched(params, e, pairs))
      out.update({f"itc/{k}": v for k, v in twin_accuracy(
          e["video"], e["text"], pairs, e["concept"]).items() if k != "num_pairs"})
    else:
      out = twin_accuracy(e["video"], e["text"], pairs, e["concept"])
    if self.split.reader.skipped:
      out["skipped_records"] = self.split.reader.skipped
    return out

  def _matched(self, params, e, pairs) -> np.ndarray:
    """`[N, N, K]` re-ranking scores, filled where `twin_accuracy` reads them (each video of
    a pair with each caption of both; NaN elsewhere)."""
    n, per = e["text"].shape[:2]
    a, b = (np.array(x) for x in zip(*pairs))
    videos = np.concatenate([a, a, b, b])
    owners = np.concatenate([a, b, a, b])
    v = np.repeat(videos, per)
    t = (np.repeat(owners, per) * per + np.tile(np.arange(per), len(owners)))
    out = np.full((n, n, per), np.nan)
    out[v, t // per, t % per] = self.split.match(params, e, v, t)
    return out
