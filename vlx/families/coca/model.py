"""CoCa (Yu et al. 2022): one model, a contrastive and a captioning loss, one forward pass.

Image: ViT tokens -> two attentional poolers, one query for the contrastive embedding
and `caption_queries` queries as the decoder's memory. Text: `[BOS] + caption` through
causal *unimodal* layers (the EOS position gives the text embedding), then causal
*multimodal* layers that cross-attend to the image memory and predict the caption.
The plain captioner (encoder-decoder, captioning loss only) is this model with the
contrastive weight at zero.

The image tower is the image ViT, or a video tower (`image.kind`: vivit | timesformer |
frame_mean, vlx/models/video.py) that returns (pooled, tokens) as the ViT does: the model
then reads `video` (and, for padded clips, `frame_mask`) from the batch instead of `image`,
and the poolers, the memory and the decoder are unchanged.

Decoding protocol (vlx/decode.py relies on it): `image_memory(image)` once, then
`decode_tokens(tokens, memory)` with `decode=True` and a mutable "cache" collection,
one position per call; without the cache, `decode_tokens` on the whole prefix.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vlx import registry
from vlx.models import layers
from vlx.models.layers import DTYPES, l2_normalize
from vlx.models.text import pool_tokens
from vlx.models.video import VIDEO_TOWERS, build_video_tower, masked_mean
from vlx.models.video import token_mask
from vlx.models.vit import ViT


class CaptionDecoder(nn.Module):
  """Token embedding, unimodal causal layers, multimodal causal + cross-attention layers."""
  vocab_size: int = 32_000
  max_len: int = 77            # caption tokens; the decoder sees max_len + 1 with BOS
  width: int = 512
  num_heads: int = 8
  mlp_ratio: float = 4.0
  unimodal_depth: int = 6
  multimodal_depth: int = 6
  scan: bool = False
  remat: str = "none"
  decode: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def setup(self):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    self.token_embedding = self.param(
        "token_embedding", layers.boxed(nn.initializers.normal(0.02), ("vocab", "embed")),
        (self.vocab_size, self.width), self.param_dtype)
    self.pos_embedding = self.param(
        "pos_embedding", layers.boxed(nn.initializers.normal(0.01), (None, "pos", "embed")),
        (1, self.max_len + 1, self.width), self.param_dtype)
    mlp_dim = int(self.width * self.mlp_ratio)
    stack = dict(num_heads=self.num_heads, mlp_dim=mlp_dim, is_causal=True, scan=self.scan,
                 remat=self.remat, decode=self.decode, **kw)
    self.unimodal = layers.Encoder(self.unimodal_depth, name="unimodal", **stack)
    self.multimodal = layers.Encoder(self.multimodal_depth, cross_attention=True,
                                     name="multimodal", **stack)
    self.head = layers.dense(self.vocab_size, "embed", "vocab", name="head", **kw)
    if self.decode:  # the next position to write; the first call only creates it
      self.cache_ready = self.has_variable("cache", "position")
      self.position = self.variable("cache", "position", lambda: jnp.zeros((), jnp.int32))

  def _embed(self, tokens):
    x = jnp.take(self.token_embedding.astype(self.dtype), tokens, axis=0)
    q_len = tokens.shape[1]
    if q_len > self.max_len + 1:
      raise ValueError(f"decoder input length {q_len} exceeds max_len + 1 = {self.max_len + 1}")
    if self.decode and self.cache_ready:
      pos = jax.lax.dynamic_slice(self.pos_embedding, (0, self.position.value, 0),
                                  (1, q_len, self.width))
      self.position.value = self.position.value + q_len
    else:
      pos = self.pos_embedding[:, :q_len]
    return layers.constrain(x + pos.astype(self.dtype), layers.ACT)

  def text_states(self, tokens_in):
    """Unimodal hidden states of the decoder input [BOS, t0, ...]: [B, L, width]."""
    return self.unimodal(self._embed(tokens_in))

  def logits(self, states, memory):
    return self.head(self.multimodal(states, None, memory)).astype(jnp.float32)

  def __call__(self, tokens_in, memory):
    return self.logits(self.text_states(tokens_in), memory)


@registry.MODELS.register("coca")
class CoCa(nn.Module):
  image: Any                     # ViT kwargs, or a video tower's with its `kind` (its own pool
                                 # is unused: CoCa pools by attention)
  text: Any                      # CaptionDecoder kwargs (+ eos_id, bos_id)
  embed_dim: int = 512
  caption_queries: int = 64
  # "map": the paper's one-query attentional pooler; "gap": mean of the image tokens (the CPU
  # tiny recipe: shape zero-shot 0.78 with MAP at 800 steps, 0.997 with GAP at 600).
  contrastive_pool: str = "map"
  temperature_init: float = 1 / 0.07
  decode: bool = False
  dtype: str = "float32"

  def setup(self):
    dtype = DTYPES[self.dtype]
    kw = dict(dtype=dtype, param_dtype=jnp.float32)
    image = dict(self.image, pool="none")
    kind = image.pop("kind", "vit")
    text = dict(self.text)
    self.eos_id = int(text.pop("eos_id", 2))
    self.bos_id = int(text.pop("bos_id", self.eos_id))
    if kind == "vit":
      self.img_tower = ViT(**image, name="img", **kw)
    elif kind in VIDEO_TOWERS:
      # Named by the attribute (`video_tower`): frame_mean passes every field but the dtypes
      # on to its image ViT, so a `name` cannot go through build_video_tower.
      self.video_tower = build_video_tower(kind, **image, **kw)
      self.tubelet = int(image.get("tubelet", 1))
    else:
      raise ValueError(f"unknown image tower kind {kind!r}; known: vit, "
                       f"{', '.join(VIDEO_TOWERS)}")
    self.is_video = kind != "vit"
    width, heads = int(image["width"]), int(image["num_heads"])
    mlp_dim = int(width * image.get("mlp_ratio", 4.0))
    if self.contrastive_pool not in ("map", "gap"):
      raise ValueError(f"unknown contrastive_pool {self.contrastive_pool!r}; known: gap, map")
    # A video's padded frames stay out of the contrastive pool (MapHead's mask). The caption
    # pool attends to every token, but a padded token holds only what the tower drew from
    # real frames (it zeroes and masks padding).
    self.contrastive_head = (layers.MapHead(heads, mlp_dim, name="contrastive_pool", **kw)
                             if self.contrastive_pool == "map" else None)
    self.caption_pool = layers.MapHead(heads, mlp_dim, num_queries=self.caption_queries,
                                       name="caption_pool", **kw)
    # Output axis "memory" (unsharded by default): with it on "tensor", XLA's CPU SPMD
    # partitioner computed wrong image-tower gradients on a data x fsdp x tensor = 2x2x2
    # mesh (every single-axis and two-axis mesh was exact); tests/test_sharding_equivalence.
    self.memory_proj = layers.dense(int(text["width"]), "embed", "memory", name="memory_proj",
                                    **kw)
    self.txt = CaptionDecoder(**text, decode=self.decode, name="txt", **kw)
    self.img_proj = layers.joint_projection(self.embed_dim, "img_proj", **kw)
    self.txt_proj = layers.joint_projection(self.embed_dim, "txt_proj", **kw)
    self.logit_scale = layers.log_logit_scale(self, self.temperature_init)

  # ---- image (or video) ----------------------------------------------------------------
  def _image_tokens(self, image, frame_mask=None):
    """Tower tokens and which are real ([B, N] for a padded video, else None)."""
    if not self.is_video:
      if frame_mask is not None:
        raise ValueError("frame_mask is for a video tower; this CoCa's tower is the image ViT")
      return self.img_tower(image)[1], None
    tokens = self.video_tower(image, frame_mask)[1]
    return tokens, token_mask(frame_mask, self.tubelet, tokens.shape[1])

  def _pooled(self, tokens, mask=None):
    if self.contrastive_head is None:
      return tokens.mean(axis=1) if mask is None else masked_mean(tokens, mask)
    return self.contrastive_head(tokens, mask)

  def encode_image(self, image, frame_mask=None):
    return l2_normalize(self.img_proj(self._pooled(*self._image_tokens(image, frame_mask))))

  def encode_video(self, video, frame_mask=None):
    """encode_image under the name the video evaluators call (vlx/families/video/evals.py)."""
    return self.encode_image(video, frame_mask)

  def _memory(self, tokens):
    pooled = self.caption_pool(tokens)
    return self.memory_proj(pooled[:, None] if pooled.ndim == 2 else pooled)

  def image_memory(self, image, frame_mask=None):
    """The caption decoder's memory: [B, caption_queries, text width]."""
    return self._memory(self._image_tokens(image, frame_mask)[0])

  # ---- text ----------------------------------------------------------------------------
  def _text_embedding(self, states, text):
    # states[:, 1:] are aligned with text (states[:, 0] is BOS); pool at the caption's EOS.
    return l2_normalize(self.txt_proj(pool_tokens(states[:, 1:], text, "eot", self.eos_id)))

  def _decoder_input(self, text):
    return jnp.concatenate([jnp.full_like(text[:, :1], self.bos_id), text], axis=1)

  def encode_text(self, text):
    return self._text_embedding(self.txt.text_states(self._decoder_input(text)), text)

  def decode_tokens(self, tokens, memory):
    """Decoder logits [B, L, vocab] for input tokens [B, L] (BOS first)."""
    return self.txt(tokens, memory)

  def __call__(self, batch, train: bool = True):
    del train
    image, text = batch["video" if self.is_video else "image"], batch["text"]
    tokens, mask = self._image_tokens(image, batch.get("frame_mask"))
    img_emb = l2_normalize(self.img_proj(self._pooled(tokens, mask)))
    memory = self._memory(tokens)
    # One unimodal pass over [BOS] + caption serves both losses: the EOS state embeds
    # the text, states 0..L-1 ([BOS, t0 .. t_{L-2}]) predict t0 .. t_{L-1}.
    states = self.txt.text_states(self._decoder_input(text))
    return {"img_emb": img_emb,
            "txt_emb": self._text_embedding(states, text),
            "logit_scale": self.logit_scale,
            "caption_logits": self.txt.logits(states[:, :-1], memory)}
