"""Fusion encoders (UNITER, OSCAR, ViLBERT, LXMERT, ALBEF) as one model around a stack.

The model owns what the five share: a ViT trained end to end; visual tokens that are its
patch tokens (`visual="patches"`, ALBEF) or region features ROI-aligned from its feature
map at the data's boxes plus a whole-image region (`visual="regions"`), with box geometry;
a [CLS] and a [MASK] id appended to the tokenizer's vocabulary; and the heads (ITC
projections, ITM, MLM, masked-region modelling, VQA, grounding), each reachable as a method.

What a training step asks of it (BERT masking, hard negatives drawn from the batch's ITC
similarities, the momentum teacher) is the fusion task's (vlx/families/fusion/task.py);
`__call__` is the plain forward of every configured head, which creates every parameter.
Which heads exist is `tasks` (and which inputs the batch holds). The stack is chosen by
name (stacks.STACKS).
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vlx import registry
from vlx.models import layers
from vlx.models.layers import DTYPES, l2_normalize
from vlx.families.fusion.layers import box_geometry, roi_align
from vlx.families.fusion.stacks import STACKS
from vlx.models.vit import ViT
from vlx.token_ids import PAD_ID

TASKS = ("itc", "itm", "mlm", "mrm", "vqa", "refer")


@registry.MODELS.register("fusion")
class FusionModel(nn.Module):
  """A fusion encoder: ViT + a named stack + the shared heads and task passes."""
  image: Any
  text: Any                   # dict(vocab_size, max_len): the tokenizer's ids and length
  fusion: Any                 # the stack's fields (width, depths, heads, ...)
  stack: str = "albef"
  visual: str = "patches"     # patches | regions
  roi_size: int = 2
  use_tags: bool = False      # OSCAR: object-tag tokens after the text, segment 1
  tasks: Tuple[str, ...] = TASKS
  num_answers: int = 21
  num_region_classes: int = 32
  embed_dim: int = 128
  temperature_init: float = 1 / 0.07
  mlm_prob: float = 0.15
  mrm_prob: float = 0.15
  blind: bool = False         # question-only baseline: the image and boxes carry nothing
  dtype: str = "float32"

  def setup(self):
    dtype = DTYPES[self.dtype]
    unknown = set(self.tasks) - set(TASKS)
    if unknown:
      raise ValueError(f"unknown fusion tasks {sorted(unknown)}; known: {TASKS}")
    if self.visual not in ("patches", "regions"):
      raise ValueError(f"unknown visual input {self.visual!r}; known: patches, regions")
    if self.use_tags and self.stack != "single_stream":
      raise ValueError("object tags (use_tags) need the single_stream stack (OSCAR)")
    self.vocab = int(self.text["vocab_size"])
    self.cls_id, self.mask_id = self.vocab, self.vocab + 1   # appended to the vocabulary
    fusion = dict(self.fusion)
    width = int(fusion["width"])
    self.vit = ViT(**dict(self.image), dtype=dtype, name="img")
    self.body = STACKS.get(self.stack)(vocab_size=self.vocab + 2, dtype=dtype, name="stack",
                                       **fusion)
    kw = dict(dtype=dtype, param_dtype=jnp.float32)
    self.img_proj = layers.joint_projection(self.embed_dim, "img_proj", **kw)
    self.txt_proj = layers.joint_projection(self.embed_dim, "txt_proj", **kw)
    self.logit_scale = layers.log_logit_scale(self, self.temperature_init)
    self.pooler = layers.dense(width, "embed", "mlp", name="pooler", **kw)
    self.itm_head = layers.dense(2, "embed", "classes", name="itm_head", **kw)
    self.vqa_hidden = layers.dense(2 * width, "embed", "mlp", name="vqa_hidden", **kw)
    self.vqa_ln = layers.layer_norm(eps=1e-12, name="vqa_ln", **kw)
    self.vqa_out = layers.dense(self.num_answers, "mlp", "classes", name="vqa_out", **kw)
    self.mlm_dense = layers.dense(width, "embed", "mlp", name="mlm_dense", **kw)
    self.mlm_ln = layers.layer_norm(eps=1e-12, name="mlm_ln", **kw)
    self.mlm_bias = self.param("mlm_bias", layers.boxed(nn.initializers.zeros, ("vocab",)),
                               (self.vocab + 2,), jnp.float32)
    self.refer_query = layers.dense(width, "embed", "mlp", name="refer_query", **kw)
    self.refer_key = layers.dense(width, "embed", "mlp", name="refer_key", **kw)
    # Output axis "embed", not "mlp" (tensor): with it on "tensor", XLA:CPU's SPMD partitioner
    # computed wrong image-tower gradients on a 2x2x2 data x fsdp x tensor mesh (every one-
    # and two-axis mesh was exact), as with CoCa's memory_proj; tests/test_fusion.py.
    self.refer_roi = layers.dense(width, "visual_in", "embed", name="refer_roi", **kw)
    if self.visual == "regions":
      self.mrm_class = layers.dense(self.num_region_classes, "embed", "classes",
                                    name="mrm_class", **kw)
      self.mrm_feat = layers.dense(self.roi_size ** 2 * int(self.image["width"]), "embed",
                                   "visual_in", name="mrm_feat", **kw)

  # ---- inputs ------------------------------------------------------------------------
  def _vit(self, image):
    if self.blind:
      image = jnp.zeros_like(image)
    _, tokens = self.vit(image)
    b, n, c = tokens.shape
    g = int(round(n ** 0.5))
    return tokens, tokens.reshape(b, g, g, c)

  def visual_inputs(self, batch) -> Dict[str, jax.Array]:
    """feats [B, R, F] (what MRM regresses), v_emb, v_mask; fmap for ROI-aligned grounding."""
    tokens, fmap = self._vit(batch["image"])
    b = tokens.shape[0]
    if self.visual == "patches":
      feats, geometry = tokens, None
      mask = jnp.ones(tokens.shape[:2], bool)
    else:
      whole = jnp.broadcast_to(jnp.array([0., 0., 1., 1.]), (b, 1, 4))
      boxes = jnp.concatenate([whole, batch["boxes"].astype(jnp.float32)], axis=1)
      mask = jnp.concatenate([jnp.ones((b, 1), bool), batch["box_mask"].astype(bool)], axis=1)
      if self.blind:  # nothing about the scene: not even how many boxes it has
        boxes, mask = jnp.zeros_like(boxes), jnp.ones_like(mask)
      feats = roi_align(fmap, boxes, self.roi_size)
      feats = feats.reshape(feats.shape[:2] + (-1,))
      geometry = box_geometry(boxes)
    return {"feats": feats, "geometry": geometry, "v_mask": mask, "fmap": fmap,
            "v_emb": self.body.embed_visual(feats, geometry)}

  def text_inputs(self, tokens, tags=None):
    """[CLS] + tokens (+ OSCAR's tags, segment 1, when given) -> ids, segment ids, mask, and
    which positions MLM may mask (never padding, [CLS], EOS or a tag)."""
    b = tokens.shape[0]
    ids = jnp.concatenate([jnp.full((b, 1), self.cls_id, tokens.dtype), tokens], axis=1)
    types = jnp.zeros_like(ids)
    maskable = (ids != PAD_ID) & (ids != self.cls_id) & (ids != int(self.text.get("eos_id", 2)))
    if self.use_tags and tags is not None and not self.blind:  # tags would describe the image
      ids = jnp.concatenate([ids, tags], axis=1)
      types = jnp.concatenate([types, jnp.ones_like(tags)], axis=1)
      maskable = jnp.concatenate([maskable, jnp.zeros(tags.shape, bool)], axis=1)
    return ids, types, ids != PAD_ID, maskable

  # ---- pieces --------------------------------------------------------------------------
  def unimodal_text(self, ids, types, mask):
    t_emb = self.body.embed_text(ids, types)
    return t_emb, self.body.encode_text(t_emb, mask)

  def encode_ids(self, ids, types, mask):
    """The text side of a fusion pass: (t_emb, t_uni, mask); t_uni only for stacks whose
    fusion reads it (a single stream re-reads the embeddings: no wasted text pass)."""
    t_emb = self.body.embed_text(ids, types)
    t_uni = self.body.encode_text(t_emb, mask) if self.body.fuse_uses_unimodal else None
    return t_emb, t_uni, mask

  def text_side(self, tokens, tags=None):
    if self.use_tags and tags is None:
      raise ValueError("use_tags: the batch has no 'tags' (pp op scene_tags)")
    ids, types, mask, _ = self.text_inputs(tokens, tags)
    return self.encode_ids(ids, types, mask)

  def _pool_visual(self, v_uni, v_mask):
    w = v_mask[..., None].astype(v_uni.dtype)
    return (v_uni * w).sum(1) / jnp.maximum(w.sum(1), 1.0)

  def fused(self, t, v):
    """t = (t_emb, t_uni, t_mask), v = (v_emb, v_uni, v_mask) -> (t_fused, v_fused, pooled)."""
    t_f, v_f = self.body.fuse(t[0], t[1], t[2], v[0], v[1], v[2])
    return t_f, v_f, jnp.tanh(self.pooler(t_f[:, 0]))

  def _vqa(self, pooled):
    return self.vqa_out(self.vqa_ln(nn.gelu(self.vqa_hidden(pooled), approximate=False)))

  def _refer(self, t_f, v_f, vis):
    """Logits over the candidate boxes: the fused [CLS] against each box's representation
    (regions: the fused region tokens after the whole-image one; patches: the visual states
    after fusion, ROI-aligned at the boxes; ALBEF's fusion leaves them unimodal)."""
    if self.visual == "regions":
      regions = v_f[:, 1:]
    else:
      b, n, c = v_f.shape
      g = int(round(n ** 0.5))
      roi = roi_align(v_f.reshape(b, g, g, c), vis["boxes"], self.roi_size)
      regions = self.refer_roi(roi.reshape(roi.shape[:2] + (-1,)))
    q = self.refer_query(t_f[:, 0])
    return jnp.einsum("bd,brd->br", q, self.refer_key(regions)).astype(jnp.float32) / np.sqrt(
        q.shape[-1])

  def image_emb(self, v_uni, v_mask):
    return l2_normalize(self.img_proj(self._pool_visual(v_uni, v_mask)))

  def text_emb(self, t_uni):
    return l2_normalize(self.txt_proj(t_uni[:, 0]))

  def mlm_logits(self, t_f):
    h = self.mlm_ln(nn.gelu(self.mlm_dense(t_f), approximate=False))
    return self.body.text_embed.logits(h).astype(jnp.float32) + self.mlm_bias

  def mrm_heads(self, v_f):
    """Masked-region modelling's predictions from fused visual states: class logits over
    the region classes and the regressed ROI features."""
    return {"mrm_class_logits": self.mrm_class(v_f).astype(jnp.float32),
            "mrm_feat_pred": self.mrm_feat(v_f).astype(jnp.float32)}

  # ---- the plain forward ----------------------------------------------------------------
  def __call__(self, batch, train: bool = False) -> Dict[str, jax.Array]:
    """Every configured head once on the batch as given (no masking, no sampled negatives:
    ITM on the positive pairs, MLM on the unmasked caption), so that `init` creates every
    parameter the training passes use and inference has one entry point."""
    del train  # no dropout: the fusion task passes its rng to the passes it runs
    tasks = set(self.tasks)
    vis, v_uni = self.vision(batch)
    v = (vis["v_emb"], v_uni, vis["v_mask"])
    out: Dict[str, jax.Array] = {}
    if "text" in batch and tasks & {"itc", "itm", "mlm", "mrm"}:
      ids, types, mask, _ = self.text_inputs(batch["text"])
      t = (*self.unimodal_text(ids, types, mask), mask)
      out.update(img_emb=self.image_emb(v_uni, vis["v_mask"]), txt_emb=self.text_emb(t[1]),
                 logit_scale=self.logit_scale)
      if "itm" in tasks:
        out["itm_logits"] = self.itm_head(self.fused(t, v)[2]).astype(jnp.float32)
      if tasks & {"mlm", "mrm"}:
        ids, types, mask, _ = self.text_inputs(batch["text"], batch.get("tags"))
        t_f, v_f, _ = self.fused(self.encode_ids(ids, types, mask), v)
        out["mlm_logits"] = self.mlm_logits(t_f)
        if "mrm" in tasks and self.visual == "regions":
          out.update(self.mrm_heads(v_f))
    if "question" in batch and "vqa" in tasks:
      out["vqa_logits"] = self.vqa_logits(batch, vis, v_uni)
    if "expression" in batch and "refer" in tasks:
      out["refer_logits"] = self.refer_logits(batch, vis, v_uni)
    return out

  # ---- evaluation entry points (dict batches) -------------------------------------------
  def vision(self, batch, vis=None, v_uni=None):
    if vis is None:
      vis = self.visual_inputs(batch)
      vis["boxes"] = batch.get("boxes")
      v_uni = self.body.encode_visual(vis["v_emb"], vis["v_mask"])
    return vis, v_uni

  def _task_pass(self, batch, key, vis=None, v_uni=None):
    vis, v_uni = self.vision(batch, vis, v_uni)
    t = self.text_side(batch[key], batch.get("tags"))
    return self.fused(t, (vis["v_emb"], v_uni, vis["v_mask"])), vis

  def vqa_logits(self, batch, vis=None, v_uni=None):
    """Answer logits [B, A] for questions [B, L], or [B, k, A] for k questions per image
    [B, k, L] (the image's visual tokens are computed once and shared by its questions).

    k questions are k fused passes over the B images, not one pass over B * k rows with the
    visual tokens repeated: the same arithmetic, and the repeated form's gradients were
    wrong (0.2-0.5% in the gradient norm, up to 5% per leaf; the loss exact) on a 2x2x2
    data x fsdp x tensor mesh under XLA:CPU's SPMD partitioner, while every 1- and 2-axis
    mesh and this form are exact (tests/test_fusion.py; the bisection is in its docstring)."""
    vis, v_uni = self.vision(batch, vis, v_uni)
    q, tags = batch["question"], batch.get("tags")
    v = (vis["v_emb"], v_uni, vis["v_mask"])

    def answer(question):
      _, _, pooled = self.fused(self.text_side(question, tags), v)
      return self._vqa(pooled).astype(jnp.float32)

    if q.ndim == 2:
      return answer(q)
    return jnp.stack([answer(q[:, j]) for j in range(q.shape[1])], axis=1)

  def refer_logits(self, batch, vis=None, v_uni=None):
    (t_f, v_f, _), vis = self._task_pass(batch, "expression", vis, v_uni)
    return self._refer(t_f, v_f, vis)

  def visual_state(self, batch):
    """Per-image inputs of fusion (for ITM re-ranking: computed once per image)."""
    vis = self.visual_inputs(batch)
    v_uni = self.body.encode_visual(vis["v_emb"], vis["v_mask"])
    return {"v_emb": vis["v_emb"], "v_uni": v_uni, "v_mask": vis["v_mask"],
            "img_emb": self.image_emb(v_uni, vis["v_mask"])}

  def text_embedding(self, batch):
    """The caption's ITC embedding (text alone, no tags)."""
    ids, types, mask, _ = self.text_inputs(batch["text"])
    return self.text_emb(self.unimodal_text(ids, types, mask)[1])

  def itm_scores(self, batch):
    """batch: a visual_state's fields per pair + `text` (+ `tags`) -> P(match) [B]."""
    t = self.text_side(batch["text"], batch.get("tags"))
    _, _, pooled = self.fused(t, (batch["v_emb"], batch["v_uni"], batch["v_mask"]))
    return jax.nn.softmax(self.itm_head(pooled).astype(jnp.float32), -1)[:, 1]
