"""X-CLIP (Ni et al. 2022, "Expanding Language-Image Pretrained Models for General Video
Recognition"): the adapted paradigm's cross-frame communication inside the image ViT
(adapters.py, `xclip`), a multi-frame integration transformer over the frame embeddings
(temporal.py, `mit`) and video-specific text prompts: each text embedding is moved toward the
video it is compared with by a small decoder whose queries are the text and whose memory is
the video's patch tokens (`PromptGenerator`).

Because the text depends on the video, the model's `txt_emb` output is `[B_video, B_text, E]`
(the contrastive objectives take that form) and scoring goes through `video_text_similarity`.
Parameter names extend the CLIP ones (`img`, `img_proj`, `txt`, `txt_proj`, `logit_scale`), so
a vlx CLIP starts it; every new piece starts at the identity (message gate 0, MIT residual
branches and table 0, prompt scale `alpha` 0), so at init it scores as the image model does.
`vlx/convert/hf_xclip.py` imports Hugging Face `XCLIPModel` weights into it.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from vlx import registry
from vlx.families.video_transfer.model import VideoTransfer
from vlx.models import layers
from vlx.models.layers import DTYPES, l2_normalize


class PromptLayer(nn.Module):
  """Pre-norm cross-attention from the texts to the video's tokens, then an MLP."""
  num_heads: int
  act: str = "quick_gelu"
  ln_eps: float = 1e-5
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, text, visual):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    y = layers.layer_norm(name="ln_cross", eps=self.ln_eps, **kw)(text)
    text = text + layers.Attention(self.num_heads, name="cross_attn", **kw)(y, visual)
    y = layers.layer_norm(name="ln_mlp", eps=self.ln_eps, **kw)(text)
    return text + layers.Mlp(4 * text.shape[-1], act=self.act, name="mlp", **kw)(y)


class PromptGenerator(nn.Module):
  """`alpha * layers(text, LN(visual))`: `depth` PromptLayers from the text embeddings
  `[B_v, B_t, E]` to the video's tokens `[B_v, N, E]`, scaled per feature by `alpha`."""
  depth: int = 2
  num_heads: int = 8
  alpha_init: float = 0.0
  act: str = "quick_gelu"
  ln_eps: float = 1e-5
  visual_ln_eps: float = 1e-5
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, text, visual):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    visual = layers.layer_norm(name="ln_visual", eps=self.visual_ln_eps, **kw)(visual)
    for i in range(self.depth):
      text = PromptLayer(self.num_heads, act=self.act, ln_eps=self.ln_eps, name=f"layer_{i}",
                         **kw)(text, visual)
    alpha = self.param("alpha", layers.boxed(nn.initializers.constant(self.alpha_init),
                                             ("joint",)), (text.shape[-1],), self.param_dtype)
    return alpha.astype(text.dtype) * text


@registry.MODELS.register("xclip")
class XClip(VideoTransfer):
  """VideoTransfer with `adapter.kind == "xclip"`, `temporal.kind == "mit"` and `prompt`
  (PromptGenerator's fields). Videos pool as X-CLIP pools them: the MIT's outputs averaged
  over the real frames, then normalised."""
  prompt: Any = None

  def setup(self):
    super().setup()
    dtype = DTYPES[self.dtype]
    width = dict(self.image)["width"]
    self.visual_ln = layers.layer_norm(dtype, jnp.float32, name="prompts_visual_ln",
                                       eps=dict(self.image).get("ln_eps", 1e-6))
    self.visual_proj = layers.dense(self.embed_dim, "embed", "joint", dtype, jnp.float32,
                                    use_bias=False, name="prompts_visual_proj",
                                    kernel_init=nn.initializers.normal(width ** -0.5))
    self.prompts = PromptGenerator(**dict(self.prompt or {}), dtype=dtype, name="prompts")

  def image_tower_fields(self) -> dict:
    return dict(prenorm_tokens=True)

  def video_features(self, video, frame_mask=None):
    """-> (video embeddings `[B, E]`, L2-normalised; the prompts' memory `[B, N, E]`: every
    patch token's pre-norm state, normalised, projected and averaged over the real frames)."""
    b, t = video.shape[:2]
    mask = None if frame_mask is None else frame_mask.astype(bool)
    feats, tokens = self.frame_features(video, mask, with_tokens=True)
    frames = self.temporal_module(feats, mask)                         # [B, T, E]
    ctx = self.visual_proj(self.visual_ln(tokens)).reshape(b, t, tokens.shape[1], -1)
    return (l2_normalize(_masked_mean(frames, mask)),
            _masked_mean(ctx, mask))

  def encode_video(self, video, frame_mask=None):
    return self.video_features(video, frame_mask)[0]

  def text_features(self, text):
    """Projected, unnormalised text embeddings `[B_t, E]` (HF's `get_text_features`)."""
    pooled, _ = self.txt_tower(text)
    return self.txt_proj(pooled)

  def prompted_text(self, text_feats, context):
    """Text features `[B_t, E]` moved toward each video -> `[B_v, B_t, E]`, normalised."""
    t = jnp.broadcast_to(text_feats[None], (context.shape[0],) + text_feats.shape)
    t = t.astype(context.dtype)
    return l2_normalize(t + self.prompts(t, context))

  def video_text_similarity(self, video_emb, context, text_feats):
    """Cosine similarities `[B_v, B_t]` of each video with each text prompted by it."""
    return jnp.einsum("vd,vtd->vt", video_emb, self.prompted_text(text_feats, context))

  def __call__(self, batch, train: bool = True):
    del train
    video_emb, context = self.video_features(batch["video"], batch.get("frame_mask"))
    return self.joint_outputs(video_emb,
                              self.prompted_text(self.text_features(batch["text"]), context))


def _masked_mean(x, mask):
  """Mean over axis 1 (frames) of the real frames."""
  if mask is None:
    return x.mean(axis=1)
  m = mask.reshape(mask.shape + (1,) * (x.ndim - 2))
  total = jnp.where(m, x, 0).sum(axis=1)  # a padded frame's NaN never reaches a real one
  return total / jnp.maximum(m.sum(axis=1), 1).astype(x.dtype)
