"""The prefix-LM: image tokens, projected to the decoder's width, then the text, through one
Gemma-style decoder (vlx/models/gemma.py) under vlx/models/masks.py's attention rule.

PaliGemma's layout: the image and the task prompt form the prefix (`mask_ar` 0, every prefix
position sees every other), the answer the suffix (`mask_ar` 1, causal). Positions count real
tokens only (`cumsum(input_mask) - 1`), so a prompt left-padded to a fixed block sits next to
the image whatever its length, and the suffix starts at the same buffer index in every row:
the generator prefills one fixed-length prefix for the whole batch.

Methods the generator (generate.py) composes: `image_embeds(image)`, `embed_text(tokens)`,
`run(x, positions, mask)` -> logits (with `decode=True` the decoder's KV cache is written at
its index).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from vlx import registry
from vlx.models import layers, masks
from vlx.models.gemma import GemmaDecoder
from vlx.models.layers import DTYPES
from vlx.models.vit import ViT


def positions_of(input_mask):
  """Rotary positions that skip padding: the i-th real token is at position i."""
  return jnp.maximum(jnp.cumsum(jnp.asarray(input_mask, jnp.int32), axis=-1) - 1, 0)


@registry.MODELS.register("prefix_lm")
class PrefixLM(nn.Module):
  image: Any                 # ViT kwargs (its pooling is unused: every token enters)
  decoder: Any               # GemmaDecoder kwargs (vocab_size, width, depth, heads, ...)
  decode: bool = False
  dtype: str = "float32"

  def setup(self):
    kw = dict(dtype=DTYPES[self.dtype], param_dtype=jnp.float32)
    self.img = ViT(**dict(self.image, pool="none"), name="img", **kw)
    dec = dict(self.decoder)
    self.projector = layers.dense(int(dec["width"]), "visual_in", "embed", name="projector",
                                  **kw)
    self.llm = GemmaDecoder(**dec, decode=self.decode, name="llm", **kw)

  def image_embeds(self, image):
    """[B, H, W, 3] -> the image's prefix tokens [B, N, decoder width]."""
    return self.projector(self.img(image)[1])

  def embed_text(self, tokens):
    return self.llm.embed(tokens)

  def run(self, x, positions, mask):
    """Embedded inputs -> float32 logits [B, L, vocab] under `mask` [B, 1, L, keys]."""
    return self.llm.logits(self.llm(x, positions, mask))

  def __call__(self, batch, train: bool = True):
    """`image`, and the text block `text_in` with its `mask_ar` and `input_mask` (tasks.py
    writes them) -> {'logits': [B, text length, vocab]}: position i predicts
    `batch['targets'][:, i]`, what the `prefix_lm` objective scores."""
    del train
    img = self.image_embeds(batch["image"])
    text = batch["text_in"]
    b, n = img.shape[0], img.shape[1]
    x = jnp.concatenate([img, self.embed_text(text)], axis=1)
    mask_ar = jnp.concatenate([jnp.zeros((b, n), jnp.int32),
                               jnp.asarray(batch["mask_ar"], jnp.int32)], axis=1)
    real = jnp.concatenate([jnp.ones((b, n), bool), jnp.asarray(batch["input_mask"], bool)],
                           axis=1)
    logits = self.run(x, positions_of(real), masks.attention_mask(mask_ar, real))
    return {"logits": logits[:, n:]}
