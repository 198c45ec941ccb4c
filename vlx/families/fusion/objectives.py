"""Objectives of the fusion encoders, each a pure `(outputs, batch) -> (loss, metrics)`.

They read what the fusion task's passes compute (vlx/families/fusion/task.py): ITC
embeddings, ITM logits over positives and hard negatives, MLM and masked-region predictions
with their targets, VQA and grounding logits. With the momentum teacher (config.ema.decay;
the task puts its outputs under `outputs["teacher"]`), `itc` and `mlm` mix its soft targets in with weight `distill_alpha`
(ALBEF's momentum distillation).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from vlx import registry
from vlx.objectives import contrastive
from vlx.objectives.combine import declare_bounds
from vlx.token_ids import IGNORE


def _masked_mean(values, mask):
  mask = mask.astype(jnp.float32)
  return jnp.sum(values * mask) / jnp.maximum(mask.sum(), 1.0)


def _teacher(outputs, alpha):
  if not alpha:
    return None
  if "teacher" not in outputs:
    raise ValueError("distill_alpha > 0 needs an EMA teacher: set config.ema.decay")
  return outputs["teacher"]


@registry.OBJECTIVES.register("itc")
def itc_objective(max_scale: float = 100.0, distill_alpha: float = 0.0, chunked: bool = False):
  """In-batch softmax contrastive loss on the unimodal embeddings (CLIP's, shared); with a
  teacher, the targets are (1 - alpha) one-hot + alpha softmax(teacher similarities) (ALBEF).
  The optimizer keeps the scale <= `max_scale`."""

  def loss_fn(outputs, batch):
    del batch
    teacher = _teacher(outputs, distill_alpha)
    soft_targets = None
    if teacher is not None:
      scale = jnp.exp(outputs["logit_scale"])
      sims = jax.lax.stop_gradient(scale * teacher["img_emb"].astype(jnp.float32)
                                   @ teacher["txt_emb"].astype(jnp.float32).T)
      hard = jnp.eye(sims.shape[0])
      soft_targets = ((1 - distill_alpha) * hard + distill_alpha * jax.nn.softmax(sims, 1),
                      (1 - distill_alpha) * hard + distill_alpha * jax.nn.softmax(sims.T, 1))
    return contrastive.softmax_contrastive(outputs, chunked=chunked, soft_targets=soft_targets)

  return declare_bounds(loss_fn, contrastive.scale_bound(max_scale))


@registry.OBJECTIVES.register("itm")
def itm_objective():
  """Image-text matching: 2-way cross-entropy over positives and hard negatives."""

  def loss_fn(outputs, batch):
    del batch
    logits, labels = outputs["itm_logits"], outputs["itm_labels"]
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, {"acc": jnp.mean(jnp.argmax(logits, -1) == labels)}

  return loss_fn


@registry.OBJECTIVES.register("mlm")
def mlm_objective(distill_alpha: float = 0.0):
  """Masked language modelling over the picked positions (targets != IGNORE)."""

  def loss_fn(outputs, batch):
    del batch
    logits, targets = outputs["mlm_logits"], outputs["mlm_targets"]
    picked = targets != IGNORE
    safe = jnp.where(picked, targets, 0)
    per_token = optax.softmax_cross_entropy_with_integer_labels(logits, safe)
    teacher = _teacher(outputs, distill_alpha)
    if teacher is not None:
      soft = jax.nn.softmax(jax.lax.stop_gradient(teacher["mlm_logits"]), -1)
      per_token = ((1 - distill_alpha) * per_token
                   + distill_alpha * optax.softmax_cross_entropy(logits, soft))
    acc = _masked_mean(jnp.argmax(logits, -1) == safe, picked)
    return _masked_mean(per_token, picked), {"acc": acc, "masked": picked.sum()}

  return loss_fn


@registry.OBJECTIVES.register("mrm")
def mrm_objective(class_weight: float = 1.0, feature_weight: float = 1.0):
  """Masked region modelling: the masked region's class (MRC) and features (MRFR, L2)."""

  def loss_fn(outputs, batch):
    del batch
    targets = outputs["mrm_class_targets"]
    picked = targets != IGNORE
    ce = optax.softmax_cross_entropy_with_integer_labels(outputs["mrm_class_logits"],
                                                         jnp.where(picked, targets, 0))
    mse = jnp.mean((outputs["mrm_feat_pred"] - outputs["mrm_feat_target"]) ** 2, -1)
    cls_loss, feat_loss = _masked_mean(ce, picked), _masked_mean(mse, outputs["mrm_mask"])
    acc = _masked_mean(jnp.argmax(outputs["mrm_class_logits"], -1) == targets, picked)
    return class_weight * cls_loss + feature_weight * feat_loss, {
        "class_loss": cls_loss, "feature_loss": feat_loss, "class_acc": acc}

  return loss_fn


@registry.OBJECTIVES.register("vqa")
def vqa_objective():
  """VQA as multi-label classification: binary cross-entropy against the soft scores,
  summed over answers (UNITER, LXMERT); the metric is the VQA soft-score accuracy. Several
  questions per image ([B, k, A]) count as B * k examples."""

  def loss_fn(outputs, batch):
    logits, scores = outputs["vqa_logits"], batch["answer_scores"].astype(jnp.float32)
    logits, scores = logits.reshape(-1, logits.shape[-1]), scores.reshape(-1, scores.shape[-1])
    loss = optax.sigmoid_binary_cross_entropy(logits, scores).sum(-1).mean()
    pred = jnp.argmax(logits, -1)
    return loss, {"acc": jnp.mean(jnp.take_along_axis(scores, pred[:, None], 1))}

  return loss_fn


@registry.OBJECTIVES.register("refer")
def refer_objective():
  """Grounding by box selection: cross-entropy over the valid candidate boxes."""

  def loss_fn(outputs, batch):
    logits = jnp.where(batch["box_mask"], outputs["refer_logits"], -1e9)
    target = batch["target"].astype(jnp.int32)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, target).mean()
    return loss, {"acc": jnp.mean(jnp.argmax(logits, -1) == target)}

  return loss_fn
