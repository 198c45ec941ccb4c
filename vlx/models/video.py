"""Video towers: ViViT (joint or factorised encoder), TimeSformer (divided space-time
attention) and a per-frame image ViT averaged over frames (the time-blind baseline).

Every tower maps a video `[B, T, H, W, 3]` in [-1, 1] and an optional frame mask `[B, T]`
(True = a real frame; a short video's padding is False) to `(pooled [B, width], tokens
[B, N, width])`, the image ViT's interface, so a tower can stand where the image tower does.
Tokens are laid out time-major (`N = steps * tokens per step`, cls excluded) and include the
padded steps: `token_mask(frame_mask, tubelet, N)` says which are real.

Parameter names follow the image ViT's (`stem/embedding`, `pos_embedding`, `cls`, `ln_pre`,
`encoder/...`, `map_head/...`) so `video_params_from_image` can start a tower from an image
checkpoint; the names that only video has are listed there.

Options that exist for imported checkpoints (vlx/convert/hf_video.py; the defaults are vlx's
own towers): `posemb` `learn_spacetime` (one learned vector per space-time token: HF ViViT)
and `sincos1d_spacetime` (a fixed 1-D sinusoid over the time-major token index: VideoMAE),
`encoder_norm=False` (no LayerNorm after the last block: VideoMAE with mean pooling) and
`pool_norm` (a LayerNorm on the gap-pooled vector: VideoMAE's `fc_norm`).
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from vlx.models import layers
from vlx.models.vit import ViT, sincos_2d

TUBELET_INITS = ("central_frame", "inflate")
# Position embeddings over the space-time grid as a whole: they carry time, so no temporal
# embedding is added on top, and they hold for one frame count and frame size only.
SPACETIME_POSEMBS = ("learn_spacetime", "sincos1d_spacetime")
POSEMBS = ("learn", "sincos2d") + SPACETIME_POSEMBS


# ---- Shared pieces -------------------------------------------------------------------------


def interpolate_time(pos: jax.Array, steps: int) -> jax.Array:
  """`pos [1, S, D]` linearly resampled to `steps` positions along time.

  Positions are the centres of equal time spans (a 4-step clip's step j covers an 8-step
  clip's steps 2j and 2j+1, so it gets their mean); beyond the first and last centre the
  end values are held. The same count returns `pos` itself.
  """
  src = pos.shape[1]
  if steps == src:
    return pos
  centres = np.clip((np.arange(steps) + 0.5) * src / steps - 0.5, 0, src - 1)
  lo = np.floor(centres).astype(int)
  hi = np.minimum(lo + 1, src - 1)
  frac = centres - lo
  weights = np.zeros((steps, src), np.float32)
  np.add.at(weights, (np.arange(steps), lo), 1 - frac)
  np.add.at(weights, (np.arange(steps), hi), frac)
  return jnp.einsum("ts,bsd->btd", jnp.asarray(weights, pos.dtype), pos)


def step_mask(frame_mask: Optional[jax.Array], tubelet: int) -> Optional[jax.Array]:
  """Frame mask `[B, T]` -> tubelet mask `[B, T // tubelet]`: a tubelet holding a real
  frame is real."""
  if frame_mask is None:
    return None
  b, t = frame_mask.shape
  return frame_mask.astype(bool).reshape(b, t // tubelet, tubelet).any(axis=-1)


def token_mask(frame_mask: Optional[jax.Array], tubelet: int, num_tokens: int):
  """Which of a tower's `num_tokens` time-major tokens belong to real frames (`[B, N]`);
  what a consumer cross-attending to the tokens masks its keys with."""
  steps = step_mask(frame_mask, tubelet)
  if steps is None:
    return None
  return jnp.repeat(steps, num_tokens // steps.shape[1], axis=1)


def masked_mean(x: jax.Array, mask: Optional[jax.Array]) -> jax.Array:
  """Mean of `x [B, S, D]` over the real positions (`mask [B, S]`, bool)."""
  if mask is None:
    return x.mean(axis=1)
  mask = mask.astype(bool)
  total = jnp.where(mask[:, :, None], x, 0).sum(axis=1)
  return total / jnp.maximum(mask.sum(axis=1), 1)[:, None].astype(x.dtype)


def order_free_mean(x: jax.Array, mask: Optional[jax.Array]) -> jax.Array:
  """Masked mean over axis 1 whose value does not depend on the order of the rows, to the
  bit: each feature's values are sorted before summing (a float sum depends on its order)."""
  if mask is not None:
    x = jnp.where(mask[:, :, None], x, 0)
  total = jnp.sort(x, axis=1).sum(axis=1)
  count = x.shape[1] if mask is None else jnp.maximum(mask.sum(axis=1), 1)[:, None]
  return total / jnp.asarray(count, x.dtype)


def sincos_1d(length: int, width: int, positions=None) -> np.ndarray:
  """`[1, length, width]` float32: position i, feature j holds sin (even j) or cos (odd j) of
  i / 10000 ** (2 * (j // 2) / width), features interleaved (VideoMAE's fixed table; computed
  in float64 and rounded once, as VideoMAE computes it). `positions` (length of them, any
  reals) replaces 0 .. length - 1."""
  pos = (np.arange(length, dtype=np.float64) if positions is None
         else np.asarray(positions, np.float64).reshape(length))[:, None]
  angle = pos / np.power(10000.0, 2 * (np.arange(width) // 2) / width)[None, :]
  table = np.where(np.arange(width) % 2 == 0, np.sin(angle), np.cos(angle))
  return table[None].astype(np.float32)


class TubeletStem(nn.Module):
  """Non-overlapping `tubelet x p x p` patches, flattened (t, p, p, c) and projected:
  `[B, T, H, W, C]` -> `[B, T / t, (H / p) * (W / p), width]`. With t = 1 it is the image
  ViT's patch stem, kernel for kernel (`embedding`, logical axes `patch`, `embed`)."""
  width: int
  patch_size: int
  tubelet: int
  use_bias: bool = True
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, t, h, w, c = x.shape
    p, k = self.patch_size, self.tubelet
    if h % p or w % p:
      raise ValueError(f"frames {h}x{w} are not divisible by patch size {p}")
    if t % k:
      raise ValueError(f"{t} frames are not divisible by tubelet size {k}")
    x = x.reshape(b, t // k, k, h // p, p, w // p, p, c).transpose(0, 1, 3, 5, 2, 4, 6, 7)
    x = x.reshape(b, t // k, (h // p) * (w // p), k * p * p * c)
    x = layers.dense(self.width, "patch", "embed", self.dtype, self.param_dtype,
                     use_bias=self.use_bias, kernel_init=nn.initializers.lecun_normal(),
                     name="embedding")(x)
    return x, (h // p, w // p)


class VideoTower(nn.Module):
  """Fields every tubelet tower shares: the image ViT's (its patch stem only, as tubelets),
  plus `tubelet` and `num_frames`."""
  patch_size: int = 16
  tubelet: int = 2           # frames per tubelet (3-D patch depth)
  num_frames: int = 8        # frames the temporal position embedding is learned for
  width: int = 768
  depth: int = 12
  num_heads: int = 12
  mlp_ratio: float = 4.0
  mlp_dim: Optional[int] = None
  pool: str = "gap"          # gap | map | none (ViViT also cls)
  posemb: str = "learn"      # spatial: learn | sincos2d (temporal: learned); or space-time:
                             # learn_spacetime | sincos1d_spacetime (no temporal one)
  # The learned temporal embedding's start: normal (std 0.02, ViT's) or sincos (a 1-D
  # sinusoid of unit amplitude, so time positions are as distinct as the tokens from the
  # first step; configs/vivit.py's tiny recipe uses it, docs/video.md has its runs).
  time_posemb_init: str = "normal"
  encoder_norm: bool = True  # a LayerNorm after the last block (encoder/ln_final)
  pool_norm: bool = False    # gap only: a LayerNorm (pool_norm) on the pooled vector
  pool_norm_eps: float = 1e-5
  scan: bool = False
  remat: str = "none"
  pre_norm: bool = False
  stem_bias: bool = True
  ln_eps: float = 1e-6
  act: str = "gelu_tanh"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @property
  def _kw(self):
    return dict(dtype=self.dtype, param_dtype=self.param_dtype)

  @property
  def _mlp_dim(self):
    return self.mlp_dim or int(self.width * self.mlp_ratio)

  def _encoder(self, depth, name):
    return layers.Encoder(depth, self.num_heads, self._mlp_dim, scan=self.scan,
                          remat=self.remat, final_norm=self.encoder_norm, ln_eps=self.ln_eps,
                          act=self.act, name=name, **self._kw)

  def _time_posemb(self, steps):
    """The learned temporal position embedding at `steps` steps ([1, steps, width]); sown
    as intermediates/time_pos so tests read what the tower added."""
    if self.num_frames % self.tubelet:
      raise ValueError(f"num_frames {self.num_frames} is not divisible by tubelet {self.tubelet}")
    if self.time_posemb_init == "normal":
      init = nn.initializers.normal(0.02)
    elif self.time_posemb_init == "sincos":
      def init(key, shape, dtype):  # pylint: disable=unused-argument
        return jnp.asarray(sincos_1d(shape[1], shape[2]), dtype)
    else:
      raise ValueError(f"unknown time_posemb_init {self.time_posemb_init!r}; known: normal, "
                       "sincos")
    pos = self.param("time_pos_embedding", layers.boxed(init, (None, "pos", "embed")),
                     (1, self.num_frames // self.tubelet, self.width), self.param_dtype)
    pos = interpolate_time(pos.astype(self.dtype), steps)
    self.sow("intermediates", "time_pos", pos)
    return pos

  def _embed(self, video, frame_mask, time_pos: bool):
    """Tubelet tokens `[B, steps, n, width]` with spatial (and, if asked, temporal) position
    embeddings, and the step mask `[B, steps]` (None without a frame mask)."""
    if self.pool_norm and self.pool != "gap":
      raise ValueError(f"pool_norm normalises the gap-pooled vector; pool is {self.pool!r}")
    x = video.astype(self.dtype)
    if frame_mask is not None:
      # Zero the padding (whatever it holds, NaN included) so a tubelet holding real and
      # padded frames never sees the padding.
      x = jnp.where(frame_mask.astype(bool)[:, :, None, None, None], x, 0)
    x, (gh, gw) = TubeletStem(self.width, self.patch_size, self.tubelet,
                              use_bias=self.stem_bias, name="stem", **self._kw)(x)
    if self.posemb in SPACETIME_POSEMBS:
      if not time_pos:
        raise ValueError(f"posemb {self.posemb!r} covers time as well; the factorised encoder "
                         "adds its temporal embedding after the spatial encoder")
      return x + self._spacetime_posemb(x.shape[1], gh, gw), step_mask(frame_mask, self.tubelet)
    if self.posemb == "learn":
      pos = self.param("pos_embedding",
                       layers.boxed(nn.initializers.normal(0.02), (None, "pos", "embed")),
                       (1, gh * gw, self.width), self.param_dtype)
    elif self.posemb == "sincos2d":
      pos = jnp.asarray(sincos_2d(gh, gw, self.width))
    else:
      raise ValueError(f"unknown posemb {self.posemb!r}; known: {', '.join(POSEMBS)}")
    x = x + pos.astype(self.dtype)[:, None]
    if time_pos:
      x = x + self._time_posemb(x.shape[1])[:, :, None]
    return x, step_mask(frame_mask, self.tubelet)

  def _spacetime_posemb(self, steps, gh, gw):
    """`[1, steps, gh * gw, width]`: one position per token of the `num_frames` clip's grid
    (learned: `spacetime_pos_embedding`; or the fixed 1-D sinusoid), time-major. Not
    interpolated: another frame count is an error."""
    if steps * self.tubelet != self.num_frames:
      raise ValueError(f"posemb {self.posemb!r} holds {self.num_frames} frames; got "
                       f"{steps * self.tubelet}")
    if self.posemb == "learn_spacetime":
      pos = self.param("spacetime_pos_embedding",
                       layers.boxed(nn.initializers.normal(0.02), (None, "pos", "embed")),
                       (1, steps * gh * gw, self.width), self.param_dtype)
    else:
      pos = jnp.asarray(sincos_1d(steps * gh * gw, self.width))
    return pos.astype(self.dtype).reshape(1, steps, gh * gw, self.width)

  def _pool(self, x, mask):
    """`(pooled, tokens)` of `x [B, S, width]` (no cls) with padded tokens left out."""
    if self.pool == "gap":
      pooled = masked_mean(x, mask)
      if self.pool_norm:
        pooled = layers.layer_norm(name="pool_norm", eps=self.pool_norm_eps, **self._kw)(pooled)
      return pooled, x
    if self.pool == "map":
      return layers.MapHead(self.num_heads, self._mlp_dim, ln_eps=self.ln_eps, act=self.act,
                            name="map_head", **self._kw)(x, mask), x
    if self.pool == "none":
      return None, x
    raise ValueError(f"unknown pool {self.pool!r} for {type(self).__name__}; "
                     "known: gap, map, none (ViViT also cls)")

  def _with_cls(self, x, mask, name):
    """`x` with a learned token in front (and a real entry in front of `mask`)."""
    cls = self.param(name, layers.boxed(nn.initializers.zeros, (None, None, "embed")),
                     (1, 1, self.width), self.param_dtype)
    x = jnp.concatenate(
        [jnp.broadcast_to(cls.astype(self.dtype), (x.shape[0], 1, self.width)), x], axis=1)
    if mask is not None:
      mask = jnp.concatenate([jnp.ones((mask.shape[0], 1), bool), mask], axis=1)
    return x, mask

  def _pre_norm(self, x):
    if self.pre_norm:
      x = layers.layer_norm(name="ln_pre", eps=self.ln_eps, **self._kw)(x)
    return layers.constrain(x, layers.ACT)


def _keys(mask):
  """Key mask `[B, 1, 1, S]` for `jax.nn.dot_product_attention` (None stays None)."""
  return None if mask is None else mask[:, None, None, :]


# ---- ViViT ---------------------------------------------------------------------------------


class ViViT(VideoTower):
  """ViViT (Arnab et al. 2021) on tubelet embeddings.

  encoder="joint" (model 1): one encoder over all space-time tokens; "factorised" (model 2):
  a spatial encoder (`spatial_encoder`, `depth` layers) per time step, pooled per step
  (`frame_pool`: cls | gap), then a temporal encoder (`temporal_encoder`, `temporal_depth`
  layers) over the step tokens, with the temporal position embedding added there.
  """
  encoder: str = "joint"     # joint | factorised
  temporal_depth: int = 4    # factorised only
  frame_pool: str = "gap"    # factorised only: cls | gap

  @nn.compact
  def __call__(self, video, frame_mask=None):
    if self.encoder == "joint":
      return self._joint(video, frame_mask)
    if self.encoder == "factorised":
      return self._factorised(video, frame_mask)
    raise ValueError(f"unknown ViViT encoder {self.encoder!r}; known: joint, factorised")

  def _joint(self, video, frame_mask):
    x, steps = self._embed(video, frame_mask, time_pos=True)
    b, t, n, d = x.shape
    x = x.reshape(b, t * n, d)
    mask = None if steps is None else jnp.repeat(steps, n, axis=1)
    return self._encode_and_pool(x, mask, "cls", self._encoder(self.depth, "encoder"))

  def _factorised(self, video, frame_mask):
    x, steps = self._embed(video, frame_mask, time_pos=False)
    b, t, n, d = x.shape
    x = x.reshape(b * t, n, d)
    if self.frame_pool == "cls":
      x, _ = self._with_cls(x, None, "cls")
    elif self.frame_pool != "gap":
      raise ValueError(f"unknown ViViT frame_pool {self.frame_pool!r}; known: cls, gap")
    x = self._encoder(self.depth, "spatial_encoder")(self._pre_norm(x))
    frames = (x[:, 0] if self.frame_pool == "cls" else x.mean(axis=1)).reshape(b, t, d)
    frames = layers.constrain(frames + self._time_posemb(t), layers.ACT)
    return self._encode_and_pool(frames, steps, "time_cls",
                                 self._encoder(self.temporal_depth, "temporal_encoder"),
                                 pre_norm=False)

  def _encode_and_pool(self, x, mask, cls_name, encoder, pre_norm=True):
    if self.pool == "cls":
      x, mask = self._with_cls(x, mask, cls_name)
    x = self._pre_norm(x) if pre_norm else x
    x = encoder(x, _keys(mask))
    if self.pool == "cls":
      return x[:, 0], x[:, 1:]
    return self._pool(x, mask)


# ---- TimeSformer ---------------------------------------------------------------------------


class DividedBlock(nn.Module):
  """TimeSformer's divided space-time block on `[B, steps * n, D]` (time-major tokens):
  temporal attention among the tokens at one position across steps (`ln_time`,
  `time_attn`), then spatial attention within a step (`ln_attn`, `attn`), then the MLP
  (`ln_mlp`, `mlp`). The spatial half has the image Block's parameter names, so image
  weights load; `time_attn/out` starting at zero makes the block the image block.
  """
  steps: int
  num_heads: int
  mlp_dim: int
  ln_eps: float = 1e-6
  act: str = "gelu_tanh"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, steps_mask=None):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    b, s, d = x.shape
    t, n = self.steps, s // self.steps
    y = layers.layer_norm(name="ln_time", eps=self.ln_eps, **kw)(x)
    y = layers.constrain(y.reshape(b, t, n, d).transpose(0, 2, 1, 3).reshape(b * n, t, d),
                         layers.ACT)
    keys = None if steps_mask is None else _keys(jnp.repeat(steps_mask, n, axis=0))
    y = layers.Attention(self.num_heads, name="time_attn", **kw)(y, y, keys)
    x = x + y.reshape(b, n, t, d).transpose(0, 2, 1, 3).reshape(b, s, d)
    y = layers.layer_norm(name="ln_attn", eps=self.ln_eps, **kw)(x)
    y = layers.constrain(y.reshape(b * t, n, d), layers.ACT)
    y = layers.Attention(self.num_heads, name="attn", **kw)(y, y)
    x = x + y.reshape(b, s, d)
    y = layers.layer_norm(name="ln_mlp", eps=self.ln_eps, **kw)(x)
    x = x + layers.Mlp(self.mlp_dim, act=self.act, name="mlp", **kw)(y)
    return layers.constrain(x, layers.ACT), None


class DividedEncoder(nn.Module):
  """`depth` DividedBlocks with the image Encoder's layout (`layer_{i}` unrolled or
  `layers` under nn.scan, then `ln_final` unless `final_norm=False`) and its remat policies."""
  depth: int
  steps: int
  num_heads: int
  mlp_dim: int
  scan: bool = False
  remat: str = "none"
  final_norm: bool = True
  ln_eps: float = 1e-6
  act: str = "gelu_tanh"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, steps_mask=None):
    if self.remat not in layers.REMAT_POLICIES:
      raise ValueError(f"unknown remat policy {self.remat!r}; "
                       f"known: {sorted(layers.REMAT_POLICIES)}")
    block = DividedBlock
    if self.remat != "none":
      block = nn.remat(block, policy=layers.REMAT_POLICIES[self.remat], prevent_cse=not self.scan)
    kw = dict(steps=self.steps, num_heads=self.num_heads, mlp_dim=self.mlp_dim,
              ln_eps=self.ln_eps, act=self.act, dtype=self.dtype, param_dtype=self.param_dtype)
    if self.scan and self.depth:
      stack = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True},
                      in_axes=nn.broadcast, length=self.depth,
                      metadata_params={nn.PARTITION_NAME: "layers"})
      x, _ = stack(name="layers", **kw)(x, steps_mask)
    else:
      for i in range(self.depth):
        x, _ = block(name=f"layer_{i}", **kw)(x, steps_mask)
    if not self.final_norm:
      return x
    return layers.layer_norm(self.dtype, self.param_dtype, name="ln_final", eps=self.ln_eps)(x)


class TimeSformer(VideoTower):
  """TimeSformer (Bertasius et al. 2021), divided space-time attention, on tubelet tokens
  (tubelet=1 is the paper's per-frame patches). Pools by gap or map over the real tokens."""

  @nn.compact
  def __call__(self, video, frame_mask=None):
    if self.pool == "cls":
      raise ValueError("TimeSformer pools by gap, map or none (a cls token has no place in "
                       "divided attention)")
    x, steps = self._embed(video, frame_mask, time_pos=True)
    b, t, n, d = x.shape
    x = self._pre_norm(x.reshape(b, t * n, d))
    x = DividedEncoder(self.depth, t, self.num_heads, self._mlp_dim, scan=self.scan,
                       remat=self.remat, final_norm=self.encoder_norm, ln_eps=self.ln_eps,
                       act=self.act, name="encoder", **self._kw)(x, steps)
    return self._pool(x, None if steps is None else jnp.repeat(steps, n, axis=1))


# ---- Per-frame baseline --------------------------------------------------------------------


class FrameMean(nn.Module):
  """The image ViT (`vit`: its fields; params under `frame`) on every frame, pooled
  outputs averaged over the real frames in an order-free way: blind to time by
  construction, the control a temporal task must defeat. Tokens: every frame's, time-major."""
  vit: Any = None
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, video, frame_mask=None):
    b, t, h, w, c = video.shape
    pooled, tokens = ViT(**dict(self.vit or {}), dtype=self.dtype, param_dtype=self.param_dtype,
                         name="frame")(video.reshape(b * t, h, w, c))
    tokens = tokens.reshape(b, -1, tokens.shape[-1])
    if pooled is None:
      return None, tokens
    mask = None if frame_mask is None else frame_mask.astype(bool)
    return order_free_mean(pooled.reshape(b, t, -1), mask), tokens


# ---- Factory and image initialisation --------------------------------------------------------

VIDEO_TOWERS = {"vivit": ViViT, "timesformer": TimeSformer, "frame_mean": FrameMean}


def build_video_tower(kind: str, **fields) -> nn.Module:
  """`kind` (vivit | timesformer | frame_mean) with its fields; frame_mean takes the image
  ViT's fields (all but dtype go to its `vit`)."""
  if kind not in VIDEO_TOWERS:
    raise ValueError(f"unknown video tower {kind!r}; known: {', '.join(VIDEO_TOWERS)}")
  if kind == "frame_mean":
    dtypes = {k: fields.pop(k) for k in ("dtype", "param_dtype") if k in fields}
    return FrameMean(vit=fields, **dtypes)
  return VIDEO_TOWERS[kind](**fields)


def tubelet_kernel(kernel_2d, tubelet: int, method: str = "central_frame"):
  """An image patch kernel `[p*p*c, D]` as a tubelet kernel `[tubelet*p*p*c, D]` (rows
  ordered (t, p, p, c) as TubeletStem flattens them). central_frame: all weight on frame
  tubelet // 2, zeros elsewhere; inflate: the kernel / tubelet on every frame. Either way a
  static video embeds as its frame does."""
  kernel_2d = jnp.asarray(kernel_2d)
  if method == "inflate":
    return jnp.concatenate([kernel_2d / tubelet] * tubelet, axis=0)
  if method == "central_frame":
    blocks = [jnp.zeros_like(kernel_2d)] * tubelet
    blocks[tubelet // 2] = kernel_2d
    return jnp.concatenate(blocks, axis=0)
  raise ValueError(f"unknown tubelet init {method!r}; known: {', '.join(TUBELET_INITS)}")


def _image_path(path):
  """The image-ViT parameter a video parameter starts from (None: keep the video init)."""
  if path[0] == "frame":                       # FrameMean: the image ViT itself
    path = path[1:]
  if path[0] == "spatial_encoder":             # ViViT factorised: the image encoder
    return ("encoder",) + path[1:]
  if path[0] in ("temporal_encoder", "time_cls"):
    return None
  if any(k in ("time_attn", "ln_time") for k in path):
    return None
  return path


def _zeroed(path):
  """Video-only parameters that start at zero: the temporal position embedding and
  TimeSformer's temporal attention output (`.../time_attn/out/...`)."""
  if "time_pos_embedding" in path:
    return True
  return "time_attn" in path and path[path.index("time_attn") + 1] == "out"


def video_params_from_image(image_params, video_params, tubelet_init: str = "central_frame"):
  """A video tower's params started from an image ViT's (both unboxed nested dicts).

  Taken from the image tower under the same name: `stem/embedding` (the kernel through
  `tubelet_kernel` when the tubelet is deeper than one frame), `pos_embedding`, `cls`,
  `ln_pre`, `encoder/...` and `map_head/...`; ViViT-factorised's `spatial_encoder/...` from
  `encoder/...`; FrameMean's `frame/...` from the whole tree. Set to zero so a static video
  gives the image features: `time_pos_embedding`, and TimeSformer's `time_attn/out` (its
  temporal branch starts as the identity). Kept as initialised: `ln_time`, the rest of
  `time_attn`, ViViT-factorised's `temporal_encoder` and `time_cls`. A video parameter
  whose image counterpart is missing or of another shape is an error naming both; image
  parameters the tower has no place for (a head it does not pool with) are left out.

  On a static video the joint ViViT (gap or map pooling) and TimeSformer then give the image
  ViT's output: every key comes in `steps` equal copies, which attention weighs as one. A
  cls token breaks that (it is one copy among repeated patches); so does the factorised
  encoder, whose temporal encoder starts from scratch.
  """
  image = traverse_util.flatten_dict(nn.meta.unbox(image_params))
  out = {}
  for path, value in traverse_util.flatten_dict(nn.meta.unbox(video_params)).items():
    if _zeroed(path):
      out[path] = jnp.zeros_like(value)
      continue
    src = _image_path(path)
    if src is None:
      out[path] = value
      continue
    name = "/".join(path)
    if src not in image:
      raise KeyError(f"video param {name}: no image param {'/'.join(src)}")
    new = jnp.asarray(image[src], value.dtype)
    if src[-3:] == ("stem", "embedding", "kernel") and new.shape != value.shape:
      new = tubelet_kernel(new, value.shape[-2] // new.shape[-2], tubelet_init)
    if new.shape != value.shape:
      raise ValueError(f"video param {name} {value.shape}: image param {'/'.join(src)} "
                       f"has shape {new.shape}")
    out[path] = new
  return traverse_util.unflatten_dict(out)
