"""BERT-style building blocks of the fusion encoders (UNITER, OSCAR, ViLBERT, LXMERT, ALBEF).

Every published fusion encoder is a post-LayerNorm BERT (`LN(x + sublayer(x))`, erf GELU,
eps 1e-12) with cross-modal sublayers added: its BERT layers are `layers.Block(norm="post")`
stacked by `layers.Encoder`, and the cross-modal layers here are built from the same
post-norm sublayers, in BERT's layout, so Hugging Face `LxmertModel` / `VisualBertModel`
checkpoints load into them one tensor to one tensor (vlx/convert/hf_fusion.py). Every
parameter has logical axis names.
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from vlx.models import layers

Dtype = Any
BERT_EPS = 1e-12


def key_mask(mask: Optional[jax.Array]) -> Optional[jax.Array]:
  """[B, K] bool (True = real token) -> the [B, 1, 1, K] mask attention takes."""
  return None if mask is None else mask[:, None, None, :]


class CrossModalLayer(nn.Module):
  """One layer exchanging information between a text and a visual stream.

  style="lxmert" (Tan & Bansal 2019): one cross-attention module shared by both directions,
  then self-attention on each side, then each side's FFN.
  style="vilbert" (Lu et al. 2019): co-attention with separate weights per direction (each
  stream's queries attend to the other's keys and values), each side's FFN, then a
  standard post-norm Block on each side.
  Both directions read the states from before the layer. The call is `((t, v), t_mask,
  v_mask) -> ((t, v), None)` so that nn.scan can stack it (layers.scanned).
  """
  num_heads: int
  mlp_dim: int
  style: str = "lxmert"
  act: str = "gelu"
  ln_eps: float = BERT_EPS
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, streams, t_mask, v_mask):
    t, v = streams
    kw = dict(ln_eps=self.ln_eps, dtype=self.dtype, param_dtype=self.param_dtype)
    attention = lambda name: layers.PostNormAttention(self.num_heads, name=name, **kw)  # noqa: E731
    ffn = lambda name: layers.PostNormMlp(self.mlp_dim, act=self.act, name=name, **kw)  # noqa: E731
    tm, vm = key_mask(t_mask), key_mask(v_mask)
    if self.style == "lxmert":
      cross = attention("cross_attn")
      t, v = cross(t, v, vm), cross(v, t, tm)
      t = attention("text_self_attn")(t, t, tm)
      v = attention("visual_self_attn")(v, v, vm)
      return (ffn("text_ffn")(t), ffn("visual_ffn")(v)), None
    if self.style == "vilbert":
      t, v = attention("text_co_attn")(t, v, vm), attention("visual_co_attn")(v, t, tm)
      t, v = ffn("text_co_ffn")(t), ffn("visual_co_ffn")(v)
      block = lambda name: layers.Block(self.num_heads, self.mlp_dim, norm="post",  # noqa: E731
                                        act=self.act, name=name, **kw)
      return (block("text_layer")(t, tm)[0], block("visual_layer")(v, vm)[0]), None
    raise ValueError(f"unknown cross-modal layer style {self.style!r}; known: lxmert, vilbert")


class TextEmbedding(nn.Module):
  """BERT embeddings: word + position + segment (token type), then LayerNorm.

  `ln=False` leaves the LayerNorm to the caller (VisualBERT normalizes the concatenated
  text and visual embeddings with one LayerNorm; LN is per token, so sharing the module
  is the same thing)."""
  vocab_size: int
  width: int
  max_len: int = 64
  type_vocab: int = 2
  ln_eps: float = BERT_EPS
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    init = layers.boxed(nn.initializers.normal(0.02), ("vocab", "embed"))
    self.word = self.param("word_embedding", init, (self.vocab_size, self.width), self.param_dtype)
    self.position = self.param(
        "pos_embedding", layers.boxed(nn.initializers.normal(0.02), ("pos", "embed")),
        (self.max_len, self.width), self.param_dtype)
    self.segment = self.param(
        "type_embedding", layers.boxed(nn.initializers.normal(0.02), (None, "embed")),
        (self.type_vocab, self.width), self.param_dtype)
    self.ln = layers.layer_norm(self.dtype, self.param_dtype, name="ln", eps=self.ln_eps)

  def __call__(self, ids, type_ids=None, positions=None, ln: bool = True):
    if positions is None:
      if ids.shape[1] > self.max_len:
        raise ValueError(f"text length {ids.shape[1]} exceeds max_len {self.max_len}")
      positions = jnp.arange(ids.shape[1])[None]
    type_ids = jnp.zeros_like(ids) if type_ids is None else type_ids
    x = (jnp.take(self.word, ids, axis=0) + jnp.take(self.position, positions, axis=0)
         + jnp.take(self.segment, type_ids, axis=0)).astype(self.dtype)
    return layers.constrain(self.ln(x) if ln else x, layers.ACT)

  def normalize(self, x):
    return self.ln(x)

  def logits(self, x):
    """Tied output embedding (BERT's MLM decoder)."""
    return jnp.einsum("...d,vd->...v", x, self.word.astype(self.dtype))


def box_geometry(boxes):
  """[..., 4] boxes (y0, x0, y1, x1 in [0, 1]) -> [..., 5] with the area (UNITER's geometry)."""
  area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
  return jnp.concatenate([boxes, area[..., None]], axis=-1)


def _bin_weights(lo, hi, size: int, output_size: int, sampling: int):
  """Bilinear weights [..., output_size, size] of each bin of [lo, hi] (normalized) over the
  `size` pixels of one axis, averaged over the bin's `sampling` sample points."""
  n = output_size * sampling
  t = (jnp.arange(n, dtype=jnp.float32) + 0.5) / n
  # Sample positions in pixel coordinates (pixel k's centre is at k + 0.5), clipped to the map.
  pos = jnp.clip((lo[..., None] + (hi - lo)[..., None] * t) * size - 0.5, 0.0, size - 1.0)
  hat = jnp.maximum(0.0, 1.0 - jnp.abs(pos[..., None] - jnp.arange(size, dtype=jnp.float32)))
  return hat.reshape(hat.shape[:-2] + (output_size, sampling, size)).mean(-2)


def roi_align(fmap, boxes, output_size: int = 2, sampling: int = 2):
  """ROI-align (He et al. 2017) of normalized boxes on a feature map.

  fmap [B, H, W, C]; boxes [B, R, 4] as (y0, x0, y1, x1) in [0, 1] of the image ->
  [B, R, output_size**2, C]: each box is cut into output_size x output_size bins and each
  bin averages `sampling`**2 bilinear samples, with no rounding of box coordinates.

  Bilinear interpolation is separable, so each bin is a weighted sum of the map with
  weights (y-weights outer x-weights): small contractions instead of a gather, whose
  gradient would be a scatter-add; matmuls are the fast path on accelerators for the small
  maps that fusion models pool from.
  """
  b, h, w, c = fmap.shape
  boxes = boxes.astype(jnp.float32)
  wy = _bin_weights(boxes[..., 0], boxes[..., 2], h, output_size, sampling)   # [B, R, o, H]
  wx = _bin_weights(boxes[..., 1], boxes[..., 3], w, output_size, sampling)   # [B, R, o, W]
  out = jnp.einsum("brih,brjw,bhwc->brijc", wy.astype(fmap.dtype), wx.astype(fmap.dtype), fmap)
  return out.reshape(b, boxes.shape[1], output_size * output_size, c)
