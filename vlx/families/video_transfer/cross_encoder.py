"""The frozen paradigm's tight form (`cross_encoder`): a dual encoder shortlists, a
cross-encoder over text tokens and frozen frame embeddings re-ranks.

Dual encoders compare one vector per video with one per text, so a caption's words never
meet the frames. The cross-encoder lets them: the text tower's token states attend to the
frame embeddings (the frozen image model's, mapped to the text width, a time table added) in
a small fusion stack, whose pooled output an image-text matching head (ITM) scores. Scoring
every pair that way costs a fusion pass per pair, so retrieval takes ITC's top k and
re-ranks them (ALBEF's protocol; the video evaluators do it for a model with `itm_scores`,
vlx/families/video/evals.py), and training adds ITM on the positives and on one hard negative
per video and per text, drawn from ITC's tempered similarities (ALBEF;
vlx/objectives/hard_negatives.py): in a batch that holds a video and its temporal twin, the
twin's caption is the likeliest negative, the one that teaches order.

The ITC side is seq_transformer's (`temporal`), so the shortlist is the best dual encoder of
the paradigm; the image tower and its projection stay locked as in every frozen paradigm.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vlx import registry
from vlx.families.video_transfer.model import VideoTransfer
from vlx.families.video_transfer.temporal import time_table
from vlx.models import layers
from vlx.models.layers import DTYPES
from vlx.objectives.hard_negatives import hard_negatives, positives
from vlx.token_ids import PAD_ID


class FrameTextFusion(nn.Module):
  """Text token states `[P, L, w]` attend to (and across) each other and cross-attend to
  frame embeddings `[P, T, E]` (mapped to `w`, a time table added) -> ITM logits `[P, 2]`
  (not-match, match) from the mean of the real text tokens."""
  depth: int = 2
  num_heads: int = 4
  mlp_ratio: float = 4.0
  max_frames: int = 16
  time_init: str = "sincos"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, text, text_mask, frames, frame_mask=None):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    w = text.shape[-1]
    memory = layers.dense(w, "joint", "embed", name="frame_in", **kw)(frames)
    # The table sits inside the fused branch (nothing here has to start as the image model):
    # a sinusoid tells the frames apart from the first step.
    memory = memory + time_table(self, memory, self.max_frames, self.time_init).astype(
        memory.dtype)
    memory_mask = None if frame_mask is None else frame_mask.astype(bool)[:, None, None, :]
    h = layers.Encoder(self.depth, self.num_heads, int(w * self.mlp_ratio),
                       cross_attention=True, name="encoder", **kw)(
                           text, text_mask[:, None, None, :], memory, memory_mask)
    m = text_mask[..., None].astype(h.dtype)
    pooled = (h * m).sum(axis=1) / jnp.maximum(m.sum(axis=1), 1.0)
    # In float32: re-ranking orders pairs by these log-odds, which bfloat16 would round.
    return layers.dense(2, "embed", "classes", jnp.float32, self.param_dtype,
                        name="itm_head")(pooled.astype(jnp.float32))


@registry.MODELS.register("video_cross_encoder")
class VideoCrossEncoder(VideoTransfer):
  """VideoTransfer (the ITC side) plus `fusion` (FrameTextFusion's fields) over the text
  tower's token states and the frame embeddings. Outputs the two-tower keys and
  `itm_logits` / `itm_labels` over the positives and the hard negatives (objective `itm`)."""
  fusion: Any = None

  def setup(self):
    super().setup()
    self.fusion_module = FrameTextFusion(**dict(self.fusion or {}), dtype=DTYPES[self.dtype],
                                         name="fusion")

  def match_logits(self, frames, text_states, text, frame_mask=None):
    return self.fusion_module(text_states, text != PAD_ID, frames, frame_mask)

  def itm_scores(self, batch):
    """batch: `frames [P, T, E]` (video_features' second output), `text [P, L]` token ids
    (+ `frame_mask`) -> the match log-odds `[P]`, what re-ranking adds to ITC's logit."""
    _, states = self.txt_tower(batch["text"])
    logits = self.match_logits(batch["frames"], states, batch["text"], batch.get("frame_mask"))
    return logits[:, 1] - logits[:, 0]

  def __call__(self, batch, train: bool = True):
    text, frame_mask = jnp.asarray(batch["text"]), batch.get("frame_mask")
    video_emb, frames = self.video_features(batch["video"], frame_mask)
    pooled, states = self.txt_tower(text)
    out = self.joint_outputs(video_emb, self.embed(pooled, self.txt_proj))
    # Drawn from the tempered similarities, as ITC's loss sees them (ALBEF); a fixed draw
    # where no rng is given (init).
    scale = jax.lax.stop_gradient(jnp.exp(out["logit_scale"]))
    rng = (self.make_rng("dropout") if train and self.has_rng("dropout")
           else jax.random.key(0))
    neg_text, neg_video = hard_negatives(scale * out["img_emb"] @ out["txt_emb"].T, rng, text)
    b = text.shape[0]
    # Rows: the positives, video i with caption neg_text[i], caption j with video neg_video[j].
    rows_v = jnp.concatenate([jnp.arange(b), jnp.arange(b), neg_video])
    rows_t = jnp.concatenate([jnp.arange(b), neg_text, jnp.arange(b)])
    mask = None if frame_mask is None else frame_mask[rows_v]
    out["itm_logits"] = self.match_logits(frames[rows_v], states[rows_t], text[rows_t], mask)
    # A drawn pair is a match only where no other caption was left (hard_negatives' fallback).
    out["itm_labels"] = positives(text)[rows_v, rows_t].astype(jnp.int32)
    return out
