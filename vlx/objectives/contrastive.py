"""Contrastive image-text objectives: CLIP (softmax), ALIGN (smoothed softmax), SigLIP (sigmoid).

Every objective is a pure function `(outputs, batch) -> (loss, metrics)` built by
a registered factory from its config kwargs. `chunked=True` selects the
`jax.shard_map` ring form (vlx/objectives/ring.py), whose per-device memory grows
with the square of the per-device batch instead of the global one; it is tested equal
to the dense form (vlx/objectives/dense_contrastive.py; tests/test_ring_losses.py). The
temperature's bound is not applied here: the objectives declare it (`param_bounds`) and the
optimizer clamps the parameter.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from vlx import registry
from vlx.objectives import ring
from vlx.objectives.combine import declare_bounds
from vlx.objectives.dense_contrastive import (sigmoid_dense, similarities,
                                              softmax_contrastive_dense)


def _logits(outputs):
  scale = jnp.exp(outputs["logit_scale"])
  return scale * similarities(outputs["img_emb"], outputs["txt_emb"]), scale


def scale_bound(max_scale: float):
  """The optimizer bound that keeps exp(logit_scale) <= max_scale (see `param_bounds`)."""
  return (("logit_scale", None, float(np.log(max_scale))),)


def _check_ring_form(txt):
  if txt.ndim != 2:
    raise ValueError("the ring (chunked) contrastive loss takes text embeddings [B, D]; a "
                     "model whose texts depend on the video (X-CLIP: [B_v, B_t, D]) needs "
                     "chunked=False")


def _in_batch_metrics(logits):
  n = logits.shape[0]
  labels = jnp.arange(n)
  return {"i2t_acc": jnp.mean(jnp.argmax(logits, 1) == labels),
          "t2i_acc": jnp.mean(jnp.argmax(logits, 0) == labels)}


def softmax_contrastive(outputs, label_smoothing=0.0, chunked=False, soft_targets=None):
  """The softmax contrastive loss that CLIP, ALIGN and the fusion models' ITC share, on
  the model's outputs with the raw `logit_scale` (its bound is the optimizer's, see
  `scale_bound`) -> (loss, metrics). `chunked` runs the ring form (vlx/objectives/ring.py)."""
  img, txt, log_scale = outputs["img_emb"], outputs["txt_emb"], outputs["logit_scale"]
  if chunked:
    _check_ring_form(txt)
    if soft_targets is not None:
      raise ValueError("the ring (chunked) contrastive loss takes one-hot or smoothed "
                       "targets only; distillation targets need chunked=False")
    loss = ring.softmax_contrastive_ring(img, txt, log_scale, label_smoothing=label_smoothing)
    return loss, {"temperature": 1.0 / jnp.exp(log_scale)}
  logits, scale = _logits(outputs)
  loss = softmax_contrastive_dense(img, txt, log_scale, label_smoothing, soft_targets)
  return loss, {"temperature": 1.0 / scale, **_in_batch_metrics(logits)}


@registry.OBJECTIVES.register("clip")
def clip_objective(max_scale: float = 100.0, chunked: bool = False):
  """CLIP: softmax contrastive, learnable temperature; the optimizer keeps the scale
  <= `max_scale` (open_clip's clamp of the parameter after each update)."""

  def loss_fn(outputs, batch):
    del batch
    return softmax_contrastive(outputs, chunked=chunked)

  return declare_bounds(loss_fn, scale_bound(max_scale))


@registry.OBJECTIVES.register("align")
def align_objective(label_smoothing: float = 0.1, max_scale: float = 100.0,
                    chunked: bool = False):
  """ALIGN: normalized softmax with label smoothing and learnable temperature (bounded
  like CLIP's)."""

  def loss_fn(outputs, batch):
    del batch
    return softmax_contrastive(outputs, label_smoothing, chunked=chunked)

  return declare_bounds(loss_fn, scale_bound(max_scale))


@registry.OBJECTIVES.register("siglip")
def siglip_objective(chunked: bool = False):
  """SigLIP: sigmoid loss over all pairs with learnable temperature and bias."""

  def loss_fn(outputs, batch):
    del batch
    log_scale, bias = outputs["logit_scale"], outputs["logit_bias"]
    if chunked:
      _check_ring_form(outputs["txt_emb"])
      loss = ring.sigmoid_ring(outputs["img_emb"], outputs["txt_emb"], log_scale, bias)
      return loss, {"temperature": 1.0 / jnp.exp(log_scale), "bias": bias}
    logits, scale = _logits(outputs)
    loss = sigmoid_dense(outputs["img_emb"], outputs["txt_emb"], log_scale, bias)
    return loss, {"temperature": 1.0 / scale, "bias": bias, **_in_batch_metrics(logits)}

  return loss_fn
