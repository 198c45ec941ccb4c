"""The fusion encoders' training task: what one train step does to a batch before the loss.

The model (vlx/families/fusion/model.py) computes; this module decides what it is asked during
training, with the step's rng:

  itc    unimodal embeddings of image and caption (in-batch softmax contrastive)
  itm    one fused pass over the positive pairs, a hard-negative caption per image and a
         hard-negative image per caption, sampled from the ITC similarities of the whole
         global batch (the step is one SPMD program, so "global" is every device)
  mlm    the caption with BERT masking (never padding, [CLS] or EOS); with `mrm`, the same
         pass masks regions too (LXMERT's joint masking) for feature regression and class
         prediction
  vqa    question + image -> answer logits
  refer  expression + image -> one logit per candidate box

and, with `config.ema.decay` > 0, ALBEF's momentum teacher: an exponential moving average
of the parameters, kept in the train state's extras, whose ITC embeddings and MLM logits on
the same masked caption become `outputs["teacher"]` for the distilling objectives.

The passes are functions of the bound model (Flax's `apply(..., method=fn)`), so the
masking and sampling live here while the parameters stay the model's.
"""

from __future__ import annotations

from typing import Dict

import jax
import jax.numpy as jnp

from vlx import registry
from vlx.objectives.hard_negatives import hard_negatives
from vlx.token_ids import IGNORE
from vlx.train.task import ModelTask


def mask_tokens(ids, rng, prob: float, mask_id: int, vocab_size: int, maskable):
  """BERT masking: each maskable position is picked with `prob`; picked positions become
  [MASK] (80%), a random ordinary token (10%) or stay (10%).

  -> (input ids, targets): targets hold the original id at picked positions, IGNORE
  elsewhere. `maskable` [B, L] bool excludes padding and special tokens."""
  k_pick, k_kind, k_rand = jax.random.split(rng, 3)
  picked = (jax.random.uniform(k_pick, ids.shape) < prob) & maskable
  kind = jax.random.uniform(k_kind, ids.shape)
  random_ids = jax.random.randint(k_rand, ids.shape, 3, vocab_size)
  new = jnp.where(kind < 0.8, mask_id, jnp.where(kind < 0.9, random_ids, ids))
  return jnp.where(picked, new, ids), jnp.where(picked, ids, IGNORE)


def _take(tree, idx):
  return jax.tree.map(lambda x: jnp.take(x, idx, axis=0), tree)


def _cat(*trees):
  return jax.tree.map(lambda *xs: jnp.concatenate(xs, axis=0), *trees)


def _uses_mrm(m) -> bool:
  return "mrm" in m.tasks and m.visual == "regions"


def masked_pass(m, batch, vis, v_uni, rng, with_mrm):
  """MLM (and with `with_mrm` masked-region modelling) on one fused pass of the bound model
  `m`: the caption BERT-masked; object regions (not the whole-image one) picked with
  `m.mrm_prob` and their features zeroed (UNITER)."""
  ids, types, mask, maskable = m.text_inputs(batch["text"], batch.get("tags"))
  k_txt, k_reg = jax.random.split(rng)
  masked_ids, targets = mask_tokens(ids, k_txt, m.mlm_prob, m.mask_id, m.vocab, maskable)
  t = m.encode_ids(masked_ids, types, mask)
  out = {}
  v = (vis["v_emb"], v_uni, vis["v_mask"])
  if with_mrm:
    picked = jax.random.uniform(k_reg, vis["v_mask"].shape) < m.mrm_prob
    picked = picked & vis["v_mask"] & (jnp.arange(picked.shape[1]) > 0)
    feats = jnp.where(picked[..., None], 0.0, vis["feats"])
    v_emb = m.body.embed_visual(feats, vis["geometry"])
    v_uni = m.body.encode_visual(v_emb, vis["v_mask"]) if m.body.fuse_uses_unimodal else None
    v = (v_emb, v_uni, vis["v_mask"])
  t_f, v_f, _ = m.fused(t, v)
  out["mlm_logits"] = m.mlm_logits(t_f[:, :targets.shape[1]])
  out["mlm_targets"] = targets
  if with_mrm:
    labels = jnp.concatenate([jnp.full((picked.shape[0], 1), IGNORE, jnp.int32),
                              batch["box_labels"].astype(jnp.int32)], axis=1)
    out.update(m.mrm_heads(v_f))
    out["mrm_class_targets"] = jnp.where(picked, labels, IGNORE)
    out["mrm_feat_target"] = jax.lax.stop_gradient(vis["feats"]).astype(jnp.float32)
    out["mrm_mask"] = picked
  return out


def training_passes(m, batch, train: bool = True) -> Dict[str, jax.Array]:
  """Every configured task pass of the bound fusion model `m` on one batch (the outputs the
  objectives in vlx/families/fusion/objectives.py read)."""
  rng = m.make_rng("dropout") if train else jax.random.key(0)
  tasks = set(m.tasks)
  vis, v_uni = m.vision(batch)
  v = (vis["v_emb"], v_uni, vis["v_mask"])
  out: Dict[str, jax.Array] = {}
  if "text" in batch and tasks & {"itc", "itm", "mlm", "mrm"}:
    # ITC's text side is the caption alone: OSCAR's tags describe the image.
    ids, types, mask, _ = m.text_inputs(batch["text"])
    t = (*m.unimodal_text(ids, types, mask), mask)
    img_emb, txt_emb = m.image_emb(v_uni, vis["v_mask"]), m.text_emb(t[1])
    out.update(img_emb=img_emb, txt_emb=txt_emb, logit_scale=m.logit_scale)
    if "itm" in tasks:
      # Drawn from the tempered similarities, as ALBEF does (softmax(sim / temperature)):
      # raw cosines would make the draw nearly uniform and the negatives easy.
      # The raw scale, as ITC's loss uses it (the optimizer keeps it within its bound).
      scale = jnp.exp(m.logit_scale)
      neg_text, neg_image = hard_negatives(scale * img_emb @ txt_emb.T,
                                           jax.random.fold_in(rng, 1), batch["text"])
      # Rows: positives, image i with caption neg_text[i], caption j with image neg_image[j].
      if m.use_tags:  # tags belong to the image, so they follow its index
        text, tags = jnp.asarray(batch["text"]), jnp.asarray(batch["tags"])
        t_all = m.text_side(_cat(text, _take(text, neg_text), text),
                            _cat(tags, tags, _take(tags, neg_image)))
      else:
        t_all = _cat(t, _take(t, neg_text), t)
      v_all = _cat(v, v, _take(v, neg_image))
      _, _, pooled = m.fused(t_all, v_all)
      b = ids.shape[0]
      out["itm_logits"] = m.itm_head(pooled).astype(jnp.float32)
      out["itm_labels"] = jnp.concatenate([jnp.ones(b, jnp.int32), jnp.zeros(2 * b, jnp.int32)])
    if tasks & {"mlm", "mrm"}:
      out.update(masked_pass(m, batch, vis, v_uni, jax.random.fold_in(rng, 2), _uses_mrm(m)))
  if "question" in batch and "vqa" in tasks:
    out["vqa_logits"] = m.vqa_logits(batch, vis, v_uni)
  if "expression" in batch and "refer" in tasks:
    out["refer_logits"] = m.refer_logits(batch, vis, v_uni)
  return out


def momentum_passes(m, batch, train: bool = True) -> Dict[str, jax.Array]:
  """What ALBEF's momentum (EMA) model contributes: ITC embeddings and, on the same masked
  caption (the same rng as `training_passes`), MLM logits — the soft targets of distillation."""
  rng = m.make_rng("dropout") if train else jax.random.key(0)
  vis, v_uni = m.vision(batch)
  ids, types, mask, _ = m.text_inputs(batch["text"])
  t_uni = m.unimodal_text(ids, types, mask)[1]
  out = {"img_emb": m.image_emb(v_uni, vis["v_mask"]), "txt_emb": m.text_emb(t_uni)}
  if set(m.tasks) & {"mlm", "mrm"}:
    masked = masked_pass(m, batch, vis, v_uni, jax.random.fold_in(rng, 2), _uses_mrm(m))
    out["mlm_logits"] = masked["mlm_logits"]
  return out


def ema_update(ema, params, decay: float):
  """ema <- decay * ema + (1 - decay) * params, leaf by leaf (a momentum model's update)."""
  return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p.astype(e.dtype), ema, params)


@registry.TASKS.register("fusion")
class FusionTask(ModelTask):
  """`training_passes` scored by the config's objectives; with `config.ema.decay` > 0 the
  momentum teacher's outputs join them under "teacher" and its parameters are the task's
  state (`extras["ema"]`, sharded like the parameters, updated after every applied step)."""
  evaluators = ("vqa", "grounding", "itm_retrieval")
  # Written by vlx before this task existed (the step then ran the teacher by method name).
  retired_config_keys = ("ema.teacher_method",)

  def __init__(self, config, model):
    super().__init__(config, model)
    ema = config.get("ema")
    self.ema_decay = float(ema.decay) if ema is not None else 0.0
    # The teacher's state follows the whole batch: it cannot be split into micro-batches.
    self.accumulates = not self.ema_decay

  def init_extras(self, params):
    return {"ema": params} if self.ema_decay else {}

  def extras_shardings(self, param_shardings):
    return {"ema": param_shardings} if self.ema_decay else {}

  def outputs(self, params, extras, batch, rng):
    out = self.apply(params, batch, rng, method=training_passes)
    if self.ema_decay:
      teacher = self.apply(extras["ema"], batch, rng, method=momentum_passes)
      out["teacher"] = jax.lax.stop_gradient(teacher)
    return out

  def update_extras(self, extras, params, step):
    del step
    if not self.ema_decay:
      return extras
    return {**extras, "ema": ema_update(extras["ema"], params, self.ema_decay)}
