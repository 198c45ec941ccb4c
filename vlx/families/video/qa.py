"""Video QA and temporal grounding: a video tower and the text tower joined by a fusion
stack, with heads for open-ended answers, multiple choice and per-frame grounding.

Fusion is single-stream (UNITER's layout, `layers.Encoder`): the text's tokens and the video
tower's tokens, each with a learned modality embedding, go through one self-attention stack,
so text attends to video and video to text in every layer (both cross-attention directions
at once: the questions read the video, and the video's time steps read the grounding query).
The heads read the fused sequence:

  vqa_logits     [B, A] or [B, Q, A]: the question's fused tokens, mean-pooled, classified
                 over the answer vocabulary (`video_answer`, a softmax, or the fusion
                 family's `vqa`, a sigmoid per answer; the `video_qa_all` pp op gives every
                 question of a video at once)
  choice_logits  [B, K]: each candidate (the video with one choice's text) fused, pooled the
                 same way and scored by one logit; the largest is the pick (`video_choice`)
  span_logits    [B, T]: the video's fused tokens of each time step (query-conditioned),
                 pooled per step, one "inside the span" logit per frame of the step
                 (`video_span` objective); `decode_spans` turns them into the best [t0, t1)

The batch carries `video` [B, T, H, W, 3] in [-1, 1] (optional `frame_mask` [B, T]) and any of
`question` ([B, L] or [B, Q, L]), `choices` [B, K, L], `query` [B, L]; the video tower runs
once, and every text of a video goes through the text tower and fusion in one batch.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from vlx import registry
from vlx.data import video_data, video_render
from vlx.models import layers
from vlx.models.layers import DTYPES
from vlx.models.text import TextTransformer
from vlx.models.video import build_video_tower, token_mask
from vlx.token_ids import PAD_ID


# ---- Data ---------------------------------------------------------------------------------


@registry.PP_OPS.register("video_qa_all")
def video_qa_all(handle, max_len: int):
  """Every question of a record at once (`video_qa` with each index): `question` [Q, L],
  `answer` [Q] and `answer_scores` [Q, A], so a training video answers all of its questions
  for one pass of the video tower."""

  def fn(ex, rng):
    asked = [video_data.video_qa(handle, max_len, index=i)(dict(ex), rng)
             for i in range(len(ex["questions"]))]
    ex.update({k: np.stack([a[k] for a in asked])
               for k in ("question", "answer", "answer_scores")})
    return ex
  return fn


video_qa_all.text_field = "questions"


# ---- Spans ---------------------------------------------------------------------------------


def span_table(num_frames: int):
  """Every non-empty span [t0, t1) of `num_frames` frames: (starts [S], ends [S], inside
  [S, T] bool)."""
  starts, ends = (np.array(v, np.int32) for v in zip(
      *[(a, b) for a in range(num_frames) for b in range(a + 1, num_frames + 1)]))
  t = np.arange(num_frames)
  return starts, ends, (t[None] >= starts[:, None]) & (t[None] < ends[:, None])


def decode_spans(logits, frame_mask=None):
  """The span [t0, t1) of real frames whose frames' inside-logits sum highest, per row of
  `logits [B, T]`: the most likely span when each frame is inside independently with
  probability sigmoid(logit) (log p - log(1 - p) summed over its frames). -> int32 [B, 2]."""
  logits = jnp.asarray(logits, jnp.float32)
  starts, ends, inside = span_table(logits.shape[-1])
  scores = logits @ jnp.asarray(inside.T, jnp.float32)                      # [B, S]
  if frame_mask is not None:  # a span holding a padded frame is never picked
    padded = (~jnp.asarray(frame_mask, bool)).astype(jnp.float32) @ inside.T.astype(np.float32)
    scores = jnp.where(padded > 0, -jnp.inf, scores)
  best = jnp.argmax(scores, axis=-1)
  return jnp.stack([jnp.asarray(starts)[best], jnp.asarray(ends)[best]], axis=-1)


# ---- Model ---------------------------------------------------------------------------------


class Head(nn.Module):
  """dense -> gelu -> LayerNorm -> dense (the fusion family's VQA head's shape)."""
  features: int
  hidden: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    kw = dict(dtype=self.dtype, param_dtype=jnp.float32)
    x = nn.gelu(layers.dense(self.hidden, "embed", "mlp", name="hidden", **kw)(x),
                approximate=False)
    x = layers.layer_norm(eps=1e-6, name="ln", **kw)(x)
    return layers.dense(self.features, "mlp", "classes", name="out", **kw)(x).astype(jnp.float32)


def _masked_mean(x, mask):
  w = mask[..., None].astype(x.dtype)
  return (x * w).sum(-2) / jnp.maximum(w.sum(-2), 1)


@registry.MODELS.register("video_qa")
class VideoQA(nn.Module):
  """`video`: the tower's `kind` (vivit | timesformer | frame_mean, or one a family
  registers: transfer, a transferred image model) and fields, `pool` any
  (its tokens are what fusion reads); `text`: the TextTransformer's fields, the same width
  as the video tower; `fusion_depth` self-attention layers over text + video tokens."""
  video: Any
  text: Any
  fusion_depth: int = 2
  fusion_heads: int = 4
  num_answers: int = len(video_render.ANSWERS)
  dtype: str = "float32"

  def setup(self):
    dtype = DTYPES[self.dtype]
    fields = dict(self.video)
    self.kind = fields.pop("kind")
    self.video_tower = build_video_tower(self.kind, **fields, dtype=dtype)
    # Frames per token: a tubelet tower's `tubelet`; frame_mean's and the transfer tower's 1.
    self.tubelet = int(getattr(self.video_tower, "tubelet", 1))
    self.txt_tower = TextTransformer(**dict(self.text), dtype=dtype, name="txt")
    width = int(self.text["width"])
    if int(fields["width"]) != width:
      raise ValueError(f"model.video.width {fields['width']} != model.text.width {width}: "
                       "fusion joins the two towers' tokens as they are")
    self.modality = self.param("modality", layers.boxed(nn.initializers.normal(0.02),
                                                        (None, "embed")), (2, width), jnp.float32)
    self.fusion = layers.Encoder(self.fusion_depth, self.fusion_heads, 4 * width,
                                 name="fusion", dtype=dtype)
    self.answer_head = Head(self.num_answers, 2 * width, dtype, name="answer_head")
    self.choice_head = Head(1, 2 * width, dtype, name="choice_head")
    self.span_head = Head(self.tubelet, 2 * width, dtype, name="span_head")

  def video_tokens(self, video, frame_mask=None):
    """(tokens [B, N, D], their mask [B, N] or None): the tower's, time-major."""
    _, tokens = self.video_tower(video, frame_mask)
    return tokens, token_mask(frame_mask, self.tubelet, tokens.shape[1])

  def fuse(self, text, v_tokens, v_mask):
    """Text [B', L] with video tokens [B, N, D] (B' = B * texts per video, each video's texts
    consecutive) -> (fused text [B', L, D], fused video [B', N, D], text mask [B', L])."""
    reps = text.shape[0] // v_tokens.shape[0]
    _, t = self.txt_tower(text)
    t_mask = text != PAD_ID
    v = jnp.repeat(v_tokens, reps, axis=0)
    v_mask = (jnp.ones(v.shape[:2], bool) if v_mask is None
              else jnp.repeat(v_mask, reps, axis=0))
    x = jnp.concatenate([t + self.modality[0].astype(t.dtype),
                         v + self.modality[1].astype(v.dtype)], axis=1)
    mask = jnp.concatenate([t_mask, v_mask], axis=1)
    x = self.fusion(layers.constrain(x, layers.ACT), mask[:, None, None, :])
    length = text.shape[1]
    return x[:, :length], x[:, length:], t_mask

  def _span_logits(self, v_f, num_frames: int):
    """One inside-logit per frame [B', T] from fused video tokens [B', N, D]."""
    b, n, d = v_f.shape
    steps = num_frames // self.tubelet
    per_step = v_f.reshape(b, steps, n // steps, d).mean(axis=2)
    return self.span_head(per_step).reshape(b, num_frames)

  def __call__(self, batch, train: bool = True):
    """Every head whose input the batch holds (`question`, `choices`, `query`). All texts of
    a video go through the text tower and fusion as one batch (one program, one pass)."""
    del train  # no dropout
    v_tokens, v_mask = self.video_tokens(batch["video"], batch.get("frame_mask"))
    b = v_tokens.shape[0]
    heads = [k for k in ("question", "choices", "query") if k in batch]
    if not heads:
      return {}
    texts = [batch[k].reshape(b, -1, batch[k].shape[-1]) for k in heads]   # [B, n_k, L]
    counts = [t.shape[1] for t in texts]
    length = max(t.shape[-1] for t in texts)
    texts = jnp.concatenate([jnp.pad(t, ((0, 0), (0, 0), (0, length - t.shape[-1])))
                             for t in texts], axis=1)
    t_f, v_f, t_mask = self.fuse(texts.reshape(-1, length), v_tokens, v_mask)
    pooled = _masked_mean(t_f, t_mask).reshape(b, sum(counts), -1)
    v_f = v_f.reshape(b, sum(counts), *v_f.shape[1:])
    out, at = {}, 0
    for key, n in zip(heads, counts):
      part = slice(at, at + n)
      at += n
      if key == "question":
        logits = self.answer_head(pooled[:, part])
        out["vqa_logits"] = logits if batch[key].ndim == 3 else logits[:, 0]
      elif key == "choices":
        out["choice_logits"] = self.choice_head(pooled[:, part])[..., 0]
      else:
        out["span_logits"] = self._span_logits(v_f[:, part][:, 0], batch["video"].shape[1])
    return out


# ---- Objectives ------------------------------------------------------------------------------


@registry.OBJECTIVES.register("video_answer")
def video_answer_objective():
  """Open-ended answers as one softmax over the answer vocabulary against the normalised
  `answer_scores` (every synthetic question has one answer; the fusion family's `vqa`, a
  sigmoid per answer, also trains this head). [B, Q, A] counts as B * Q questions."""

  def loss_fn(outputs, batch):
    logits, scores = outputs["vqa_logits"], batch["answer_scores"].astype(jnp.float32)
    logits = logits.reshape(-1, logits.shape[-1]).astype(jnp.float32)
    scores = scores.reshape(-1, scores.shape[-1])
    target = scores / jnp.maximum(scores.sum(-1, keepdims=True), 1e-9)
    loss = optax.softmax_cross_entropy(logits, target).mean()
    pred = jnp.argmax(logits, -1)
    return loss, {"acc": jnp.mean(jnp.take_along_axis(scores, pred[:, None], 1))}

  return loss_fn


@registry.OBJECTIVES.register("video_choice")
def video_choice_objective():
  """Multiple choice: softmax cross-entropy over the K candidates' logits."""

  def loss_fn(outputs, batch):
    logits = outputs["choice_logits"].astype(jnp.float32)
    target = batch["choice_target"].astype(jnp.int32)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, target).mean()
    return loss, {"acc": jnp.mean(jnp.argmax(logits, -1) == target)}

  return loss_fn


@registry.OBJECTIVES.register("video_span")
def video_span_objective(span_weight: float = 1.0):
  """Temporal grounding: per-frame binary cross-entropy (inside the span or not) over the
  real frames, plus `span_weight` x softmax cross-entropy over every candidate span scored
  as `decode_spans` scores it (the sum of its frames' logits), so training sharpens exactly
  the choice the decoder makes. Metric: the decoded span's IoU >= 0.5 rate."""

  def loss_fn(outputs, batch):
    logits = outputs["span_logits"].astype(jnp.float32)
    target = batch["span_mask"].astype(jnp.float32)
    real = batch.get("frame_mask")
    real = jnp.ones_like(target) if real is None else real.astype(jnp.float32)
    bce = optax.sigmoid_binary_cross_entropy(logits, target)
    frame_loss = (bce * real).sum() / jnp.maximum(real.sum(), 1)
    _, _, inside = span_table(logits.shape[-1])
    inside = jnp.asarray(inside, jnp.float32)
    scores = logits @ inside.T                                                 # [B, S]
    scores = jnp.where((1 - real) @ inside.T > 0, -1e9, scores)
    exact = jnp.all(inside[None] == target[:, None], axis=-1)                 # [B, S]
    span_loss = -(jax.nn.log_softmax(scores) * exact).sum(-1).mean()
    pred = decode_spans(logits, real > 0)
    gt = jnp.stack([jnp.argmax(target, -1), target.shape[-1] - jnp.argmax(target[:, ::-1], -1)],
                   -1)
    inter = jnp.clip(jnp.minimum(pred[:, 1], gt[:, 1]) - jnp.maximum(pred[:, 0], gt[:, 0]), 0)
    union = (pred[:, 1] - pred[:, 0]) + (gt[:, 1] - gt[:, 0]) - inter
    iou = inter / jnp.maximum(union, 1)
    return frame_loss + span_weight * span_loss, {
        "frame_loss": frame_loss, "span_loss": span_loss, "r1_iou50": jnp.mean(iou >= 0.5)}

  return loss_fn
