"""The four fusion stacks: single-stream, co-attention (ViLBERT), LXMERT and ALBEF.

Each stack turns token ids and visual features into text and visual states through one
interface, so the model around them (vlx/families/fusion/model.py: visual inputs, heads, tasks)
is shared by all five published families:

  embed_text(ids, type_ids)            -> t_emb   [B, L, W]
  embed_visual(feats, geometry)        -> v_emb   [B, R, W]
  encode_text(t_emb, t_mask)           -> t_uni   unimodal text states (ITC reads [:, 0])
  encode_visual(v_emb, v_mask)         -> v_uni   unimodal visual states
  fuse(t_emb, t_uni, t_mask, v_emb, v_uni, v_mask) -> (t_fused, v_fused)

A stack is picked by name (`model.stack`) from `STACKS`. Its BERT layers are post-norm
`layers.Block`s in `layers.Encoder`s; `scan` and `remat` (fields, so `model.fusion.scan` /
`model.fusion.remat` in a config; off by default) apply to every layer stack of it, the
cross-modal layers included. Scanned params stack on a `layers` axis under each stack's name
instead of `layer_{i}` / `cross_{i}`, so Hugging Face imports (vlx/convert/hf_fusion.py) need
the unrolled layout.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from vlx import registry
from vlx.models import layers
from vlx.families.fusion.layers import BERT_EPS, CrossModalLayer, TextEmbedding, key_mask

STACKS = registry.Registry("fusion stack")


class _Stack(nn.Module):
  """Fields every stack shares (sizes of the BERT parts and of the visual embedding)."""
  fuse_uses_unimodal = True  # False: `fuse` ignores t_uni / v_uni (callers may pass None)
  vocab_size: int
  width: int = 128
  num_heads: int = 4
  mlp_dim: int = 512
  max_len: int = 64
  type_vocab: int = 2
  text_depth: int = 2        # unimodal text layers (single-stream: the one shared stack)
  visual_depth: int = 0      # unimodal visual layers (ViLBERT, LXMERT's object encoder)
  fusion_depth: int = 2      # cross-modal layers
  act: str = "gelu"
  ln_eps: float = BERT_EPS
  scan: bool = False         # every layer stack under nn.scan (one compiled layer per stack)
  remat: str = "none"        # layers.REMAT_POLICIES name for every layer
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @property
  def kw(self):
    return dict(act=self.act, ln_eps=self.ln_eps, dtype=self.dtype, param_dtype=self.param_dtype)

  def _bert(self, depth, name, cross_attention=False):
    """`depth` post-norm (BERT) layers; callers pass [B, K] key masks through `key_mask`."""
    return layers.Encoder(depth, self.num_heads, self.mlp_dim, cross_attention=cross_attention,
                          scan=self.scan, remat=self.remat, norm="post", name=name, **self.kw)

  def _text_embedding(self):
    return TextEmbedding(self.vocab_size, self.width, self.max_len, self.type_vocab,
                         ln_eps=self.ln_eps, dtype=self.dtype, param_dtype=self.param_dtype,
                         name="text_embed")

  def _dense(self, name, in_name="visual_in"):
    return layers.dense(self.width, in_name, "embed", self.dtype, self.param_dtype, name=name)

  def _ln(self, name):
    return layers.layer_norm(self.dtype, self.param_dtype, name=name, eps=self.ln_eps)

  def embed_text(self, ids, type_ids=None):
    return self.text_embed(ids, type_ids)


@STACKS.register("single_stream")
class SingleStream(_Stack):
  """UNITER / OSCAR / VisualBERT: one BERT over [text (+ tags); visual tokens].

  Visual tokens embed as VisualBERT does (projection + a visual segment embedding + the
  position-0 embedding, LayerNorm shared with the text) plus, when `box_embed`, a
  projection of the box geometry (UNITER's location embedding). For ITC the same stack
  runs on each modality alone.
  """
  fuse_uses_unimodal = False
  box_embed: bool = True

  def setup(self):
    self.text_embed = self._text_embedding()
    self.visual_proj = self._dense("visual_proj")
    if self.box_embed:
      self.box_proj = self._dense("box_proj", "box")
    init = layers.boxed(nn.initializers.normal(0.02), (None, "embed"))
    self.visual_type = self.param("visual_type_embedding", init, (self.type_vocab, self.width),
                                  self.param_dtype)
    self.visual_pos = self.param("visual_pos_embedding", init, (self.max_len, self.width),
                                 self.param_dtype)
    self.encoder = self._bert(self.text_depth, "encoder")

  def embed_visual(self, feats, geometry=None):
    x = self.visual_proj(feats) + (self.visual_type[1] + self.visual_pos[0]).astype(self.dtype)
    if self.box_embed and geometry is not None:
      x = x + self.box_proj(geometry)
    return self.text_embed.normalize(x)

  def encode_text(self, t_emb, t_mask):
    return self.encoder(t_emb, key_mask(t_mask))

  def encode_visual(self, v_emb, v_mask):
    return self.encoder(v_emb, key_mask(v_mask))

  def fuse(self, t_emb, t_uni, t_mask, v_emb, v_uni, v_mask):
    del t_uni, v_uni
    n = t_emb.shape[1]
    x = self.encoder(jnp.concatenate([t_emb, v_emb], 1),
                     key_mask(jnp.concatenate([t_mask, v_mask], 1)))
    return x[:, :n], x[:, n:]


class _UnimodalEncoders(_Stack):
  """Stacks with separate unimodal text and visual encoders before their fusion layers."""

  def _encoders(self):
    """(text_encoder, visual_encoder), for `setup` to assign."""
    return (self._bert(self.text_depth, "text_encoder"),
            self._bert(self.visual_depth, "visual_encoder"))

  def encode_text(self, t_emb, t_mask):
    return self.text_encoder(t_emb, key_mask(t_mask))

  def encode_visual(self, v_emb, v_mask):
    return self.visual_encoder(v_emb, key_mask(v_mask))


class _TwoStream(_UnimodalEncoders):
  """Unimodal text and visual encoders, then `fusion_depth` cross-modal layers.

  Visual tokens embed as LXMERT's (`(LN(fc(feats)) + LN(fc(geometry))) / 2`)."""
  style: str = "lxmert"

  def setup(self):
    self.text_embed = self._text_embedding()
    self.visual_proj = self._dense("visual_proj")
    self.visual_ln = self._ln("visual_ln")
    self.box_proj = self._dense("box_proj", "box")
    self.box_ln = self._ln("box_ln")
    self.text_encoder, self.visual_encoder = self._encoders()
    layer = layers.rematted(CrossModalLayer, self.remat, self.scan)
    kw = dict(num_heads=self.num_heads, mlp_dim=self.mlp_dim, style=self.style, **self.kw)
    if self.scan and self.fusion_depth:
      self.cross = [layers.scanned(layer, self.fusion_depth)(name="cross", **kw)]
    else:
      self.cross = [layer(name=f"cross_{i}", **kw) for i in range(self.fusion_depth)]

  def embed_visual(self, feats, geometry=None):
    x = self.visual_ln(self.visual_proj(feats))
    if geometry is None:
      return x
    return (x + self.box_ln(self.box_proj(geometry))) / 2

  def fuse(self, t_emb, t_uni, t_mask, v_emb, v_uni, v_mask):
    del t_emb, v_emb
    streams = (t_uni, v_uni)
    for layer in self.cross:
      streams, _ = layer(streams, t_mask, v_mask)
    return streams


@STACKS.register("lxmert")
class Lxmert(_TwoStream):
  """LXMERT: language encoder, object-relationship encoder, cross-modality encoder."""
  style: str = "lxmert"


@STACKS.register("co_attention")
class CoAttention(_TwoStream):
  """ViLBERT: two streams whose co-attention layers swap keys and values."""
  style: str = "vilbert"


@STACKS.register("albef")
class Albef(_UnimodalEncoders):
  """ALBEF: text encoder (`text_depth` BERT layers), then `fusion_depth` layers that add
  cross-attention to the image tokens. The image encoder is the model's ViT; its tokens
  embed through a projection and LayerNorm (`visual_depth` extra layers, default none)."""

  def setup(self):
    self.text_embed = self._text_embedding()
    self.visual_proj = self._dense("visual_proj")
    self.visual_ln = self._ln("visual_ln")
    self.text_encoder, self.visual_encoder = self._encoders()
    self.fusion = self._bert(self.fusion_depth, "fusion", cross_attention=True)

  def embed_visual(self, feats, geometry=None):
    del geometry
    return self.visual_ln(self.visual_proj(feats))

  def fuse(self, t_emb, t_uni, t_mask, v_emb, v_uni, v_mask):
    del t_emb, v_emb
    return self.fusion(t_uni, key_mask(t_mask), v_uni, key_mask(v_mask)), v_uni
