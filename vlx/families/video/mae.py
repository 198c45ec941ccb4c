"""VideoMAE (Tong et al. 2022), InternVideo's masked video modelling objective.

Most of a video is redundant in time, so VideoMAE hides 75-95% of it as *tubes*: one random
set of spatial positions per video, hidden at every time step, so a hidden patch cannot be
copied from the same place one step earlier. The ViViT joint encoder (vlx/models/video.py,
its parameters under `video/`, named as a ViViT's so fine-tuning loads them) sees only the
visible tubelets; a narrower decoder fills the grid back with a learned mask token, adds its
own position embeddings and predicts every tubelet's pixels, and `mae_pixels` scores the
hidden ones only.

  tube_mask          the visible spatial positions per video (fixed count: the step jits)
  VideoMAE           model `video_mae`: outputs `mae_pred`, `mae_target`, `mae_mask`
  VideoMAETask       task `video_mae`: draws the mask from the step's rng
  mae_pixels         objective: mean squared error over the hidden tubelets

Targets are the tubelets' pixels flattened as the stem flattens them (t, p, p, c); with
`norm_targets` (VideoMAE's best setting) each tubelet is normalised per channel by its own
mean and standard deviation, so the loss rewards structure, not brightness.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from vlx import registry
from vlx.models import layers
from vlx.models.layers import DTYPES
from vlx.models.video import VideoTower, ViViT, interpolate_time, step_mask
from vlx.train.task import ModelTask

# ---- Tube masking ---------------------------------------------------------------------------


def num_hidden(num_spatial: int, ratio: float) -> int:
  """How many of `num_spatial` positions a `ratio` hides: round(ratio * num_spatial), at
  least one hidden and one visible (else there is nothing to predict or nothing to see)."""
  hidden = round(ratio * num_spatial)
  if not 0 < hidden < num_spatial:
    raise ValueError(f"mask ratio {ratio} hides {hidden} of {num_spatial} positions; it must "
                     "hide at least one and leave at least one visible")
  return hidden


def tube_mask(rng: jax.Array, batch: int, num_spatial: int, ratio: float) -> jax.Array:
  """The visible spatial positions of each video, `[batch, num_spatial - hidden]` int32 in
  ascending order: a uniformly random subset per video, of a fixed size so shapes are static.
  A position is visible (or hidden) at every time step: that is what makes it a tube."""
  visible = num_spatial - num_hidden(num_spatial, ratio)
  noise = jax.random.uniform(rng, (batch, num_spatial))
  return jnp.sort(jnp.argsort(noise, axis=-1)[:, :visible], axis=-1).astype(jnp.int32)


def hidden_positions(visible: jax.Array, num_spatial: int) -> jax.Array:
  """`[B, num_spatial]` bool, True where a position is not in `visible` `[B, V]`."""
  return ~jnp.any(visible[:, :, None] == jnp.arange(num_spatial), axis=1)


# ---- Targets --------------------------------------------------------------------------------


def tubelets(video: jax.Array, tubelet: int, patch: int) -> jax.Array:
  """`[B, T, H, W, C]` -> `[B, T / tubelet, (H / p) * (W / p), tubelet * p * p * C]`, each
  tubelet's pixels flattened (t, p, p, c) as TubeletStem flattens them."""
  b, t, h, w, c = video.shape
  x = video.reshape(b, t // tubelet, tubelet, h // patch, patch, w // patch, patch, c)
  x = x.transpose(0, 1, 3, 5, 2, 4, 6, 7)
  return x.reshape(b, t // tubelet, (h // patch) * (w // patch), tubelet * patch * patch * c)


def normalise_tubelets(x: jax.Array, channels: int = 3, eps: float = 1e-6) -> jax.Array:
  """Each tubelet `x[..., :]` (flattened pixels, channels last) minus its mean, over its
  standard deviation, per channel (VideoMAE's normalised pixel targets)."""
  shape = x.shape
  x = x.reshape(shape[:-1] + (shape[-1] // channels, channels))
  mean = x.mean(axis=-2, keepdims=True)
  var = x.var(axis=-2, keepdims=True)
  return ((x - mean) / jnp.sqrt(var + eps)).reshape(shape)


# ---- Model ----------------------------------------------------------------------------------


class VisibleViViT(ViViT):
  """The joint ViViT (same parameters) run on a subset of its tubes: the tubelet stem and the
  position embeddings on the full grid, then only the `visible` spatial positions of every
  step enter the encoder. -> `[B, steps, V, width]`, encoded, time-major like the tower's."""

  @nn.compact
  def __call__(self, video, visible, frame_mask=None):
    if self.encoder != "joint":
      raise ValueError(f"VideoMAE encodes with the joint ViViT, not {self.encoder!r}")
    x, steps = self._embed(video, frame_mask, time_pos=True)
    x = jnp.take_along_axis(x, visible[:, None, :, None], axis=2)
    b, t, v, d = x.shape
    keys = None if steps is None else jnp.repeat(steps, v, axis=1)[:, None, None, :]
    x = self._encoder(self.depth, "encoder")(self._pre_norm(x.reshape(b, t * v, d)), keys)
    return x.reshape(b, t, v, d)


@registry.MODELS.register("video_mae")
class VideoMAE(nn.Module):
  """ViViT encoder on the visible tubes + a light decoder predicting every tubelet's pixels.

  `encoder`: VisibleViViT's fields (a joint ViViT's: patch_size, tubelet, num_frames, width,
  depth, num_heads, ...; pooling is unused). The decoder (`decoder_*`) is its own width and
  depth: the encoder's tokens projected in (`decoder_embed`), a learned `mask_token` at the
  hidden positions, learned spatial and temporal position embeddings, an Encoder stack and a
  linear head to the pixels (`decoder_pred`). `mask_ratio` is read by the task that draws
  the mask; without one (init, eval) the model draws its own, from the dropout rng in
  training and from a fixed key otherwise.

  Batch: `video` [B, T, H, W, 3] in [-1, 1], optional `frame_mask` [B, T]. Outputs
  (float32): `mae_pred` and `mae_target` [B, steps, n, tubelet*p*p*3] on the full grid, and
  `mae_mask` [B, steps, n] bool, the hidden tubelets of real frames (what the loss scores).
  """
  encoder: Any = None
  decoder_width: int = 192
  decoder_depth: int = 4
  decoder_heads: int = 3
  decoder_mlp_ratio: float = 4.0
  mask_ratio: float = 0.9
  norm_targets: bool = True
  dtype: str = "float32"

  def _tower_fields(self) -> Dict[str, Any]:
    return {**dict(self.encoder or {}), "pool": "none"}

  def num_spatial(self, video_shape) -> int:
    """Tubes per video for a video of `video_shape` [B, T, H, W, C]."""
    patch = self._tower_fields().get("patch_size", VideoTower.patch_size)
    return (video_shape[2] // patch) * (video_shape[3] // patch)

  @nn.compact
  def __call__(self, batch, train: bool = True, visible: Optional[jax.Array] = None):
    dtype = DTYPES[self.dtype]
    kw = dict(dtype=dtype, param_dtype=jnp.float32)
    video, frame_mask = batch["video"], batch.get("frame_mask")
    tower = VisibleViViT(**self._tower_fields(), name="video", **kw)
    n = self.num_spatial(video.shape)
    if visible is None:
      rng = self.make_rng("dropout") if train else jax.random.key(0)
      visible = tube_mask(rng, video.shape[0], n, self.mask_ratio)
    hidden = hidden_positions(visible, n)

    x = tower(video, visible, frame_mask)                                  # [B, t, V, D]
    b, t, v, _ = x.shape
    width = self.decoder_width
    x = layers.dense(width, "visual_in", "embed", name="decoder_embed", **kw)(x)
    mask_token = self.param("mask_token",
                            layers.boxed(nn.initializers.normal(0.02), (None, None, "embed")),
                            (1, 1, width), jnp.float32)
    filler = jnp.broadcast_to(mask_token.astype(dtype)[:, None], (b, t, n - v, width))
    # Visible tokens first, then mask tokens; `order` says which position each one holds,
    # and its inverse permutation puts every token back on the grid.
    order = jnp.concatenate([visible, jnp.argsort(hidden, axis=-1, stable=True)[:, v:]], -1)
    back = jnp.argsort(order, axis=-1)
    x = jnp.take_along_axis(jnp.concatenate([x, filler], axis=2), back[:, None, :, None], 2)

    pos = self.param("decoder_pos_embedding",
                     layers.boxed(nn.initializers.normal(0.02), (None, "pos", "embed")),
                     (1, n, width), jnp.float32)
    time_pos = self.param("decoder_time_pos_embedding",
                          layers.boxed(nn.initializers.normal(0.02), (None, "pos", "embed")),
                          (1, tower.num_frames // tower.tubelet, width), jnp.float32)
    x = (x + pos.astype(dtype)[:, None] + interpolate_time(time_pos.astype(dtype), t)[:, :, None])
    steps = step_mask(frame_mask, tower.tubelet)
    keys = None if steps is None else jnp.repeat(steps, n, axis=1)[:, None, None, :]
    x = layers.Encoder(self.decoder_depth, self.decoder_heads,
                       int(width * self.decoder_mlp_ratio), name="decoder", **kw)(
                           layers.constrain(x.reshape(b, t * n, width), layers.ACT), keys)
    pixels = tower.tubelet * tower.patch_size ** 2 * video.shape[-1]
    pred = layers.dense(pixels, "embed", "patch", name="decoder_pred", **kw)(x)

    if frame_mask is not None:  # padding (NaN included) never reaches a target
      video = jnp.where(frame_mask.astype(bool)[:, :, None, None, None], video, 0)
    target = tubelets(video.astype(jnp.float32), tower.tubelet, tower.patch_size)
    if self.norm_targets:
      target = normalise_tubelets(target, video.shape[-1])
    mask = jnp.broadcast_to(hidden[:, None, :], (b, t, n))
    if steps is not None:
      mask = mask & steps[:, :, None]
    return {"mae_pred": pred.reshape(b, t, n, pixels).astype(jnp.float32),
            "mae_target": jax.lax.stop_gradient(target),
            "mae_mask": mask}


# ---- Task and objective ---------------------------------------------------------------------


@registry.TASKS.register("video_mae")
class VideoMAETask(ModelTask):
  """ModelTask whose forward hides tubes: the mask is drawn here from the step's rng (a key
  of its own, apart from dropout's), with the model's `mask_ratio`.

  No evaluators of its own (reconstruction is its metric). Not split into micro-batches: the
  step's accumulation is GradCache, for losses that couple examples, and MAE's do not."""
  evaluators = ()
  accumulates = False

  def outputs(self, params, extras, batch, rng):
    del extras
    k_mask, k_drop = jax.random.split(rng)
    video = batch["video"]
    visible = tube_mask(k_mask, video.shape[0], self.model.num_spatial(video.shape),
                        self.model.mask_ratio)
    return self.apply(params, batch, k_drop,
                      method=lambda m, b, train: m(b, train, visible=visible))


@registry.OBJECTIVES.register("mae_pixels")
def mae_pixels_objective():
  """Mean squared error between predicted and target pixels over the hidden tubelets
  (`mae_mask`); visible ones are not scored, as in VideoMAE."""

  def loss_fn(outputs, batch):
    del batch
    mask = outputs["mae_mask"]
    err = jnp.mean(jnp.square(outputs["mae_pred"] - outputs["mae_target"]), axis=-1)
    count = jnp.maximum(mask.sum(), 1).astype(jnp.float32)
    loss = jnp.where(mask, err, 0.0).sum() / count
    return loss, {"hidden_fraction": mask.mean(dtype=jnp.float32)}

  return loss_fn
