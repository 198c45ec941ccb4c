"""The prefix-LM: image tokens, projected to the decoder's width, then the text, through
Gemma-style stacks (vlx/models/gemma.py) under vlx/models/masks.py's attention rule.

Two layouts, by `layout`:

  decoder_only     PaliGemma: one decoder over [image; prompt; answer]; the image and the
                   prompt (`mask_ar` 0) see each other fully, the answer (`mask_ar` 1) is
                   causal and sees everything before it.
  encoder_decoder  OFA: an encoder (full attention, `encoder_depth` layers) over the prefix
                   [image; prompt], a decoder over the answer, causal, cross-attending to the
                   encoder's output at every layer.

Both read one batch layout (vlx/families/unified/tasks.py's text block, `mask_ar` 0 = the
prefix): the encoder-decoder sends block 0 (`cumsum(mask_ar) == 0`) to the encoder and the rest
to the decoder, so a config switches layout without touching data, loss or evaluators.
Positions count real tokens only (`positions_of`), so a prompt left-padded to a fixed block
sits next to the image whatever its length.

The generator (generate.py) calls `__call__` for its uncached reference and teacher-forced
scores, and for the KV-cached loop `image_embeds`, `embed_text`, `run` (decoder-only) or
`encode`, `decode_step` (encoder-decoder).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from vlx import registry
from vlx.models import layers, masks
from vlx.models.gemma import GemmaDecoder
from vlx.models.video import sincos_1d
from vlx.models.layers import DTYPES
from vlx.models.vit import ViT

LAYOUTS = ("decoder_only", "encoder_decoder")


def coordinate_code(values, width: int) -> np.ndarray:
  """`values [...]` in [0, 1] -> `[..., width]`: sin / cos of 2 pi f v at `width / 2`
  frequencies f spaced geometrically from 0.5 to 32 cycles per image, each sin / cos pair of
  unit norm (features of nearby coordinates agree, of far ones do not)."""
  freqs = np.geomspace(0.5, 32.0, width // 2)
  angle = 2 * np.pi * np.asarray(values, np.float64)[..., None] * freqs
  return np.concatenate([np.sin(angle), np.cos(angle)], -1).astype(np.float32)


def location_code(loc, width: int) -> np.ndarray:
  """`[num_bins, width]`: each location token's coordinate (its bin's centre) coded in both
  halves, the image tokens' y half and x half (`patch_code`)."""
  centres = (np.arange(loc["num_bins"]) + 0.5) / loc["num_bins"]
  half = coordinate_code(centres, width // 2)
  return np.concatenate([half, half], -1)


def patch_code(grid: int, width: int) -> np.ndarray:
  """`[grid * grid, width]`: each patch centre's y coded in the first half, x in the second."""
  centres = (np.arange(grid) + 0.5) / grid
  y = np.repeat(coordinate_code(centres, width // 2), grid, axis=0)
  x = np.tile(coordinate_code(centres, width // 2), (grid, 1))
  return np.concatenate([y, x], -1)


def positions_of(input_mask):
  """Rotary positions that skip padding: the i-th real token is at position i."""
  return jnp.maximum(jnp.cumsum(jnp.asarray(input_mask, jnp.int32), axis=-1) - 1, 0)


def cross_mask(query_real, memory_real):
  """[B, 1, Lq, M]: every real query reads every real memory position."""
  return (jnp.asarray(query_real, bool)[:, None, :, None]
          & jnp.asarray(memory_real, bool)[:, None, None, :])


def frame_times(num_frames: int, clip_frames: int) -> np.ndarray:
  """Where each of `num_frames` frames spread evenly over a clip sits, in units of the clip's
  `clip_frames` frames: (j + 0.5) * clip_frames / num_frames - 0.5; with clip_frames 0, the
  index j."""
  j = np.arange(num_frames, dtype=np.float64)
  return j if not clip_frames else (j + 0.5) * clip_frames / num_frames - 0.5


@registry.MODELS.register("prefix_lm")
class PrefixLM(nn.Module):
  image: Any                 # ViT kwargs (its pooling is unused: every token enters)
  decoder: Any               # GemmaDecoder kwargs (vocab_size, width, depth, heads, ...)
  layout: str = "decoder_only"
  encoder_depth: int = 0     # encoder_decoder: the encoder's layers (same shape as the decoder's)
  decode: bool = False
  dtype: str = "float32"
  # dict(start, num_bins): the location tokens' ids. A fixed code of each token's coordinate
  # is added to its input embedding and to its output logit (h . code, a learned scale), and
  # each image token gets the code of its patch centre: copying a patch's code is then
  # enough to name its coordinate. None: off (PaliGemma has no such code).
  loc_code: Any = None
  # Videos: the frame count a clip is trained at. Frame j of a T-frame video is marked at its
  # time in the clip, (j + 0.5) * clip_frames / T - 0.5 (j itself when T = clip_frames), so a
  # clip read at more or fewer frames gets marks among the trained ones rather than marks it
  # never saw past the last. 0: frame j marked at j, whatever T.
  clip_frames: int = 0

  def setup(self):
    if self.layout not in LAYOUTS:
      raise ValueError(f"unknown prefix_lm layout {self.layout!r}; known: {', '.join(LAYOUTS)}")
    kw = dict(dtype=DTYPES[self.dtype], param_dtype=jnp.float32)
    self.img = ViT(**dict(self.image, pool="none"), name="img", **kw)
    dec = dict(self.decoder)
    self.projector = layers.dense(int(dec["width"]), "visual_in", "embed", name="projector",
                                  **kw)
    self.is_seq2seq = self.layout == "encoder_decoder"
    if self.is_seq2seq:
      if self.encoder_depth < 1:
        raise ValueError("layout encoder_decoder needs encoder_depth >= 1")
      self.encoder = GemmaDecoder(**dict(dec, vocab_size=0, depth=self.encoder_depth),
                                  name="encoder", **kw)
    self.llm = GemmaDecoder(**dec, cross_attention=self.is_seq2seq, decode=self.decode,
                            name="llm", **kw)
    if self.loc_code is not None:
      self.loc_scale = self.param("loc_scale", layers.boxed(nn.initializers.ones, ()), (),
                                  jnp.float32)

  def _add_patch_code(self, tokens):
    if self.loc_code is None:
      return tokens
    grid = int(round(tokens.shape[-2] ** 0.5))
    if grid * grid != tokens.shape[-2]:
      raise ValueError(f"loc_code needs a square grid of image tokens, got {tokens.shape[-2]}")
    return tokens + jnp.asarray(patch_code(grid, tokens.shape[-1]), tokens.dtype)

  def _logits(self, hidden):
    logits = self.llm.logits(hidden)
    if self.loc_code is None:
      return logits
    start, bins = int(self.loc_code["start"]), int(self.loc_code["num_bins"])
    code = jnp.asarray(location_code(self.loc_code, hidden.shape[-1]) / hidden.shape[-1] ** 0.5)
    extra = self.loc_scale * jnp.einsum("bld,vd->blv", hidden.astype(jnp.float32), code)
    return logits.at[..., start:start + bins].add(extra)

  def image_embeds(self, image):
    """[B, H, W, 3] -> the image's prefix tokens [B, N, decoder width]. A video [B, T, H, W,
    3] -> every frame's tokens in time order [B, T * N, width], each frame's marked by a fixed
    sinusoid of its time in the clip (`clip_frames`; no parameter: a model trained on T
    frames reads more at test time)."""
    if image.ndim == 5:
      b, t = image.shape[:2]
      tokens = self._add_patch_code(
          self.projector(self.img(image.reshape((b * t,) + image.shape[2:]))[1]))
      tokens = tokens.reshape((b, t) + tokens.shape[1:])
      when = jnp.asarray(sincos_1d(t, tokens.shape[-1], frame_times(t, self.clip_frames))[0],
                         tokens.dtype)
      return (tokens + when[None, :, None, :]).reshape(b, -1, tokens.shape[-1])
    return self._add_patch_code(self.projector(self.img(image)[1]))

  def embed_text(self, tokens):
    x = self.llm.embed(tokens)
    if self.loc_code is None:
      return x
    start, bins = int(self.loc_code["start"]), int(self.loc_code["num_bins"])
    code = jnp.asarray(location_code(self.loc_code, x.shape[-1]), x.dtype)
    is_loc = (tokens >= start) & (tokens < start + bins)
    return x + jnp.where(is_loc[..., None], code[jnp.clip(tokens - start, 0, bins - 1)], 0)

  def run(self, x, positions, mask):
    """Decoder-only: embedded inputs -> float32 logits [B, L, vocab] under `mask`
    [B, 1, L, keys]."""
    return self._logits(self.llm(x, positions, mask))

  def encode(self, x, real):
    """Encoder-decoder: the prefix's embedded inputs [B, L, W] and real mask -> memory."""
    return self.encoder(x, positions_of(real), masks.attention_mask(jnp.zeros_like(real, jnp.int32),
                                                                    real))

  def decode_step(self, x, positions, mask, memory, memory_real):
    """Encoder-decoder: decoder inputs -> logits, cross-attending to `memory`."""
    query_real = jnp.ones(x.shape[:2], bool)
    return self._logits(self.llm(x, positions, mask, memory,
                                 cross_mask(query_real, memory_real)))

  def __call__(self, batch, train: bool = True):
    """`image`, and the text block `text_in` with its `mask_ar` and `input_mask` (tasks.py
    writes them) -> {'logits': [B, text length, vocab]}: position i predicts
    `batch['targets'][:, i]`, what the `prefix_lm` objective scores (the encoder-decoder's
    prefix positions predict nothing and hold zeros)."""
    del train
    # The generator's uncached loop passes the image's tokens, computed once.
    # A video batch (`video` [B, T, H, W, 3]) is read frame by frame (image_embeds).
    img = (batch["image_embeds"] if "image_embeds" in batch else
           self.image_embeds(batch["video"] if "video" in batch else batch["image"]))
    b, n = img.shape[0], img.shape[1]
    x = jnp.concatenate([img, self.embed_text(batch["text_in"])], axis=1)
    mask_ar = jnp.concatenate([jnp.zeros((b, n), jnp.int32),
                               jnp.asarray(batch["mask_ar"], jnp.int32)], axis=1)
    real = jnp.concatenate([jnp.ones((b, n), bool), jnp.asarray(batch["input_mask"], bool)],
                           axis=1)
    if "segment" in batch:  # packed tasks (tasks.pack_blocks): each block sees the image
      if self.is_seq2seq:
        raise ValueError("packed tasks (unified_pack) are for the decoder_only layout")
      seg = jnp.concatenate([jnp.zeros((b, n), jnp.int32), batch["segment"]], axis=1)
      mask = masks.attention_mask(mask_ar, real) & (
          (seg[:, None, None, :] == 0) | (seg[:, None, None, :] == seg[:, None, :, None]))
      positions = jnp.concatenate([jnp.broadcast_to(jnp.arange(n), (b, n)),
                                   n + batch["text_positions"]], axis=1)
      return {"logits": self.run(x, positions, mask)[:, n:]}
    if not self.is_seq2seq:
      logits = self.run(x, positions_of(real), masks.attention_mask(mask_ar, real))
      return {"logits": logits[:, n:]}
    prefix = jnp.cumsum(mask_ar, axis=1) == 0
    memory = self.encode(x, real & prefix)
    text = x[:, n:]
    answer = (real & ~prefix)[:, n:]
    hidden = self.llm(text, positions_of(answer), masks.attention_mask(mask_ar[:, n:], answer),
                      memory, cross_mask(answer, real & prefix))
    logits = self._logits(hidden)
    return {"logits": jnp.where(answer[..., None], logits, 0.0)}
