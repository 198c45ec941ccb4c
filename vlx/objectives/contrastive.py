"""Contrastive image-text objectives: CLIP (softmax), ALIGN (smoothed softmax), SigLIP (sigmoid).

Every objective is a pure function `(outputs, batch) -> (loss, metrics)` built by
a registered factory from its config kwargs. `chunked=True` selects the
`jax.shard_map` ring form (vlx/objectives/ring.py) whose per-device memory does
not grow with the global batch; it is tested equal to the dense form here.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vlx import registry


def _logits(outputs, max_scale=None):
  log_scale = outputs["logit_scale"]
  if max_scale is not None:
    log_scale = jnp.minimum(log_scale, np.log(max_scale))
  scale = jnp.exp(log_scale)
  img = outputs["img_emb"].astype(jnp.float32)
  txt = outputs["txt_emb"].astype(jnp.float32)
  return scale * img @ txt.T, scale


def _in_batch_metrics(logits):
  n = logits.shape[0]
  labels = jnp.arange(n)
  return {"i2t_acc": jnp.mean(jnp.argmax(logits, 1) == labels),
          "t2i_acc": jnp.mean(jnp.argmax(logits, 0) == labels)}


def softmax_contrastive_dense(img, txt, log_scale, label_smoothing=0.0):
  """Symmetric InfoNCE on [B, D] embeddings; the reference for the ring form."""
  logits = jnp.exp(log_scale) * img.astype(jnp.float32) @ txt.astype(jnp.float32).T
  n = logits.shape[0]
  targets = optax.smooth_labels(jax.nn.one_hot(jnp.arange(n), n), label_smoothing) \
      if label_smoothing else jax.nn.one_hot(jnp.arange(n), n)
  i2t = optax.softmax_cross_entropy(logits, targets).mean()
  t2i = optax.softmax_cross_entropy(logits.T, targets).mean()
  return 0.5 * (i2t + t2i)


def sigmoid_dense(img, txt, log_scale, bias):
  """SigLIP's pairwise sigmoid loss, summed over texts and averaged over images."""
  logits = jnp.exp(log_scale) * img.astype(jnp.float32) @ txt.astype(jnp.float32).T + bias
  n = logits.shape[0]
  labels = 2.0 * jnp.eye(n) - 1.0
  return -jnp.sum(jax.nn.log_sigmoid(labels * logits)) / n


def _ring():
  from vlx.objectives import ring  # pylint: disable=g-import-not-at-top
  return ring


@registry.OBJECTIVES.register("clip")
def clip_objective(max_scale: float = 100.0, chunked: bool = False):
  """CLIP: softmax contrastive, temperature learnable and clamped at `max_scale`."""

  def loss_fn(outputs, batch):
    del batch
    log_scale = jnp.minimum(outputs["logit_scale"], np.log(max_scale))
    if chunked:
      loss = _ring().softmax_contrastive_ring(outputs["img_emb"], outputs["txt_emb"], log_scale)
      return loss, {"temperature": 1.0 / jnp.exp(log_scale)}
    logits, scale = _logits(outputs, max_scale)
    loss = softmax_contrastive_dense(outputs["img_emb"], outputs["txt_emb"], log_scale)
    return loss, {"temperature": 1.0 / scale, **_in_batch_metrics(logits)}

  return loss_fn


@registry.OBJECTIVES.register("align")
def align_objective(label_smoothing: float = 0.1, max_scale: float = 100.0,
                    chunked: bool = False):
  """ALIGN: normalized softmax with label smoothing and learnable temperature."""

  def loss_fn(outputs, batch):
    del batch
    log_scale = jnp.minimum(outputs["logit_scale"], np.log(max_scale))
    if chunked:
      loss = _ring().softmax_contrastive_ring(outputs["img_emb"], outputs["txt_emb"], log_scale,
                                              label_smoothing=label_smoothing)
      return loss, {"temperature": 1.0 / jnp.exp(log_scale)}
    logits, scale = _logits(outputs, max_scale)
    loss = softmax_contrastive_dense(outputs["img_emb"], outputs["txt_emb"], log_scale,
                                     label_smoothing)
    return loss, {"temperature": 1.0 / scale, **_in_batch_metrics(logits)}

  return loss_fn


@registry.OBJECTIVES.register("siglip")
def siglip_objective(chunked: bool = False):
  """SigLIP: sigmoid loss over all pairs with learnable temperature and bias."""

  def loss_fn(outputs, batch):
    del batch
    log_scale, bias = outputs["logit_scale"], outputs["logit_bias"]
    if chunked:
      loss = _ring().sigmoid_ring(outputs["img_emb"], outputs["txt_emb"], log_scale, bias)
      return loss, {"temperature": 1.0 / jnp.exp(log_scale), "bias": bias}
    logits, scale = _logits(outputs)
    loss = sigmoid_dense(outputs["img_emb"], outputs["txt_emb"], log_scale, bias)
    return loss, {"temperature": 1.0 / scale, "bias": bias, **_in_batch_metrics(logits)}

  return loss_fn


def build_objectives(objectives_config):
  """{name: weight or {weight, **kwargs}} -> pure `(outputs, batch) -> (loss, metrics)`.

  The total is the weighted sum; every objective's own loss and metrics are
  reported under its name so a config can be debugged term by term.
  """
  terms = []
  for name, spec in objectives_config.items():
    if isinstance(spec, (int, float)):
      weight, kwargs = float(spec), {}
    else:
      kwargs = dict(spec)
      weight = float(kwargs.pop("weight", 1.0))
    terms.append((name, weight, registry.OBJECTIVES.get(name)(**kwargs)))
  if not terms:
    raise ValueError("config.objectives is empty: nothing to train")

  def total_loss(outputs, batch):
    total = 0.0
    metrics = {}
    for name, weight, fn in terms:
      loss, m = fn(outputs, batch)
      total = total + weight * loss
      metrics[f"{name}/loss"] = loss
      metrics.update({f"{name}/{k}": v for k, v in m.items()})
    return total, metrics

  return total_loss
