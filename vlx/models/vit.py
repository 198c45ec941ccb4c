"""Vision Transformer image encoder with patch or convolutional stem and cls/gap/map pooling."""

from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from vlx.models import layers


def sincos_2d(h: int, w: int, width: int, temperature: float = 10_000.) -> np.ndarray:
  """Fixed 2-D sine-cosine position embedding (MoCo v3 / big_vision)."""
  y, x = np.mgrid[:h, :w]
  omega = np.arange(width // 4) / (width // 4 - 1)
  omega = 1. / (temperature ** omega)
  y = np.einsum("m,d->md", y.flatten(), omega)
  x = np.einsum("m,d->md", x.flatten(), omega)
  return np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], axis=1)[None]


class ConvStem(nn.Module):
  """Stride-2 3x3 convolutions down to the patch grid (Xiao et al. 2021, 'Early
  convolutions help transformers see better'): small ViTs learn shape much faster."""
  width: int
  patch_size: int
  channels: Sequence[int] = (32, 64, 128)
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    n_down = int(np.log2(self.patch_size))
    if 2 ** n_down != self.patch_size:
      raise ValueError(f"conv stem needs a power-of-two patch size, got {self.patch_size}")
    chans = list(self.channels)[:n_down]
    chans += [chans[-1]] * (n_down - len(chans))
    for i, c in enumerate(chans):
      x = nn.Conv(c, (3, 3), strides=(2, 2), dtype=self.dtype, param_dtype=self.param_dtype,
                  kernel_init=layers.boxed(nn.initializers.he_normal(),
                                           (None, None, "conv_in", "conv_out")),
                  bias_init=layers.boxed(nn.initializers.zeros, ("conv_out",)),
                  name=f"conv_{i}")(x)
      x = nn.gelu(x)
    b, h, w, c = x.shape
    x = x.reshape(b, h * w, c)
    return layers.dense(self.width, "conv_out", "embed", self.dtype, self.param_dtype,
                        name="proj")(x), (h, w)


class PatchStem(nn.Module):
  width: int
  patch_size: int
  use_bias: bool = True  # CLIP's patch convolution has none
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, h, w, c = x.shape
    p = self.patch_size
    if h % p or w % p:
      raise ValueError(f"image {h}x{w} is not divisible by patch size {p}")
    x = x.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    x = x.reshape(b, (h // p) * (w // p), p * p * c)
    return layers.dense(self.width, "patch", "embed", self.dtype, self.param_dtype,
                        use_bias=self.use_bias, kernel_init=nn.initializers.lecun_normal(),
                        name="embedding")(x), (
                            h // p, w // p)


class ViT(nn.Module):
  """Image [B, H, W, 3] in [-1, 1] -> (pooled [B, width], tokens [B, N, width]); with
  `hidden_layers`, also (those blocks' patch-token states `[B, N, width]`, ...)."""
  patch_size: int = 16
  width: int = 768
  depth: int = 12
  num_heads: int = 12
  mlp_ratio: float = 4.0
  pool: str = "gap"          # cls | gap | map | none (tokens only, pooled is None)
  stem: str = "patch"        # patch | conv
  posemb: str = "learn"      # learn | sincos2d
  # The conv stem's channels per stride-2 convolution (None: ConvStem's (32, 64, 128)).
  stem_channels: Optional[Sequence[int]] = None
  scan: bool = False
  remat: str = "none"
  # Options that imported checkpoints need (CLIP: pre_norm, no stem bias, eps 1e-5).
  pre_norm: bool = False
  stem_bias: bool = True
  mlp_dim: Optional[int] = None  # overrides mlp_ratio (checkpoints give the exact size)
  ln_eps: float = 1e-6
  act: str = "gelu_tanh"
  block: Any = None  # the encoder's block class (layers.Block; see layers.Encoder.block)
  # True: the returned tokens are the last block's states before `ln_final` (the pooled
  # embedding is normalised as always); what X-CLIP's video prompts read.
  prenorm_tokens: bool = False
  # Blocks whose states (the residual stream after the block, patch tokens only) are returned
  # as a third output, a tuple in this order: what an EVL-style decoder reads besides the
  # last layer. Unrolled stacks only (scan=False).
  hidden_layers: Tuple[int, ...] = ()
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, image, block_kw=None):
    """`block_kw`: attributes of this call's blocks (a video's frame count), for `block`."""
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    if self.stem == "patch":
      stem = PatchStem(self.width, self.patch_size, use_bias=self.stem_bias, name="stem", **kw)
    elif self.stem == "conv":
      stem = ConvStem(self.width, self.patch_size, name="stem", **kw,
                      **({} if self.stem_channels is None else
                         dict(channels=tuple(self.stem_channels))))
    else:
      raise ValueError(f"unknown ViT stem {self.stem!r}; known: conv, patch")
    x, (gh, gw) = stem(image.astype(self.dtype))
    if self.posemb == "learn":
      pos = self.param("pos_embedding",
                       layers.boxed(nn.initializers.normal(0.02), (None, "pos", "embed")),
                       (1, gh * gw, self.width), self.param_dtype)
    elif self.posemb == "sincos2d":
      pos = jnp.asarray(sincos_2d(gh, gw, self.width))
    else:
      raise ValueError(f"unknown posemb {self.posemb!r}")
    x = x + pos.astype(self.dtype)
    if self.pool == "cls":
      cls = self.param("cls", layers.boxed(nn.initializers.zeros, (None, None, "embed")),
                       (1, 1, self.width), self.param_dtype)
      x = jnp.concatenate([jnp.broadcast_to(cls.astype(self.dtype), (x.shape[0], 1, self.width)),
                           x], axis=1)
    if self.pre_norm:
      x = layers.layer_norm(name="ln_pre", eps=self.ln_eps, **kw)(x)
    x = layers.constrain(x, layers.ACT)
    mlp_dim = self.mlp_dim or int(self.width * self.mlp_ratio)
    x = layers.Encoder(self.depth, self.num_heads, mlp_dim, scan=self.scan, remat=self.remat,
                       ln_eps=self.ln_eps, act=self.act, block=self.block, block_kw=block_kw,
                       keep_prenorm=self.prenorm_tokens,
                       return_layers=tuple(self.hidden_layers), name="encoder", **kw)(x)
    hidden = ()
    if self.hidden_layers:
      x, hidden = x
      hidden = tuple(h[:, 1:] if self.pool == "cls" else h for h in hidden)
    if self.prenorm_tokens:
      x, raw = x
      if self.pool == "cls":
        out = x[:, 0], raw[:, 1:]
      elif self.pool == "gap":
        out = x.mean(axis=1), raw
      else:
        raise ValueError(f"prenorm_tokens takes pool cls or gap, not {self.pool!r}")
    elif self.pool == "cls":
      out = x[:, 0], x[:, 1:]
    elif self.pool == "gap":
      out = x.mean(axis=1), x
    elif self.pool == "map":
      out = layers.MapHead(self.num_heads, mlp_dim, ln_eps=self.ln_eps, act=self.act,
                           name="map_head", **kw)(x), x
    elif self.pool == "none":
      out = None, x
    else:
      raise ValueError(f"unknown ViT pool {self.pool!r}; known: cls, gap, map, none")
    return (*out, hidden) if self.hidden_layers else out
