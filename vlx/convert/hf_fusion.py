"""Hugging Face `LxmertModel` / `VisualBertModel` weights -> vlx fusion stacks (+ pooler).

  imported = hf_fusion.import_dir("path/to/hf_dir")          # config.json + model.safetensors
  imported = hf_fusion.import_state(hf_config_dict, state)     # a state dict as numpy arrays
  hf_fusion.save_for_training(imported, "out_dir")             # what `ft=out_dir` trains from
  out = hf_fusion.FusionEncoder(imported.stack, imported.fusion).apply(
      {"params": imported.params}, ids, type_ids, t_mask, feats, geometry, v_mask)

`imported.fusion` is the stack's constructor kwargs (what a `fusion` model config holds:
width, num_heads, mlp_dim, max_len, type_vocab, depths, vocab_size, ln_eps, act, ...) and
`imported.params` is `{"stack": ..., "pooler": ...}`, the names `FusionModel`
(vlx/families/fusion/model.py) gives its stack and pooler, so the two subtrees drop into a fusion
model's params. The mapping uses vlx/convert/mapping.py's two-way rules, so
`export_state(imported)` gives the Hugging Face state dict back.

What maps where
  LXMERT      embeddings.*                  -> stack/text_embed (word, position, type, LN)
              encoder.visn_fc.{visn_fc,visn_layer_norm,box_fc,box_layer_norm}
                                            -> stack/{visual_proj,visual_ln,box_proj,box_ln}
              encoder.layer.{i}  (l_layers) -> stack/text_encoder/layer_{i}
              encoder.r_layers.{i}          -> stack/visual_encoder/layer_{i}
              encoder.x_layers.{i}          -> stack/cross_{i} (`visual_attention`, the one
                                               cross-attention both directions share, ->
                                               cross_attn; lang_/visn_ self-attention and FFN
                                               -> text_/visual_ ones)
              pooler.dense                  -> pooler
  VisualBERT  embeddings.{word,position,token_type}_embeddings, LayerNorm -> stack/text_embed
              embeddings.visual_projection  -> stack/visual_proj
              embeddings.visual_{token_type,position}_embeddings
                                            -> stack/visual_{type,pos}_embedding
              encoder.layer.{i}             -> stack/encoder/layer_{i}
              pooler.dense                  -> pooler
  (stack `single_stream` with box_embed=False: VisualBERT has no box geometry input.)

Fine-tuning the training model from an import (`python -m vlx.convert --src=HF_DIR
--out=DIR`, then `configs/lxmert.py:ft=DIR` or, for VisualBERT, `configs/uniter.py:ft=DIR`)
  `save_for_training` writes the stack and pooler in FusionModel's own layout, which differs
  from FusionEncoder's in two tensors, so that FusionModel's forward equals the checkpoint's:
  * word embeddings gain two rows, copies of the checkpoint's [CLS] and [MASK] rows:
    FusionModel appends its [CLS] and [MASK] ids after the text vocabulary;
  * LXMERT's box_fc reads (x0, y0, x1, y1); FusionModel's geometry is (y0, x0, y1, x1, area)
    of the same normalized boxes, so the kernel's rows are permuted and the area row is 0.
  Everything else of FusionModel (the ViT, the ITC projections, the ITM / MLM / MRM / VQA /
  grounding heads) is not in the checkpoint: `vlx_pretrained.json` lists the subtrees it
  holds (`param_subtrees`) and the trainer keeps the fresh initialisation of the rest.
  The region features change meaning: LXMERT / VisualBERT were trained on a Faster R-CNN's
  features of the regions; FusionModel ROI-aligns its own ViT's feature map at the data's
  boxes (plus a whole-image region), and its ViT is sized so those features have the
  checkpoint's width (`roi_size**2 * image width == visual_feat_dim`). `visual_proj` thus
  loads, but reads features of a freshly initialised ViT: a starting point that the fine-tune
  re-learns with the ViT, not a match. The box geometry keeps its meaning (LXMERT's boxes
  are normalized corners too). Text ids must be the checkpoint's: when the Hugging Face
  directory has a `vocab.txt`, the conversion copies it (with `do_lower_case` /
  `strip_accents` from tokenizer_config.json) and `ft=DIR` reads the data's text with that
  BERT WordPiece tokenizer (vlx/data/bert_wordpiece.py; [CLS] left to FusionModel, [SEP] as
  the text's EOS). Without a vocab.txt the fine-tune reads the dataset's own tokenizer's
  ids (fine for a model trained from these ids, meaningless for a pretrained BERT
  vocabulary).

What is and is not imported
  * The encoder and the pooler, with numerical parity: tests/test_fusion_parity.py checks
    LXMERT's language/vision/pooled outputs and VisualBERT's last_hidden_state and
    pooler_output within 5e-6 of transformers in fp32 (measured at most 1.4e-6 over five
    random models and inputs), and FusionModel initialised from a converted LXMERT within
    the same tolerance (tests/test_fusion_finetune.py).
  * Checkpoints of the pre-training / task classes (`LxmertForPreTraining`,
    `LxmertForQuestionAnswering`, `VisualBertForPreTraining`, `VisualBertForQuestionAnswering`,
    ...) import too: their base model's tensors (`lxmert.` / `visual_bert.` prefix) are
    read, and their heads are NOT imported (LXMERT's `cls.*` MLM/matching heads,
    `obj_predict_head.*`, `answer_head.*`; VisualBERT's `cls.*`, `classifier.*`, ...).
    vlx's fusion heads (ITM, MLM, VQA, ...) are shaped for vlx's tasks and start fresh.
  * The text vocabulary is the checkpoint's own (`fusion["vocab_size"]`); `FusionModel`
    appends [CLS] and [MASK] ids to its tokenizer's vocabulary instead, so dropping these
    params into a FusionModel needs a BERT-vocabulary tokenizer and matching ids.
  * Visual inputs are what the checkpoint was trained on: LXMERT's Faster R-CNN region
    features (`visual_feat_dim`) with boxes as (x0, y0, x1, y1) in [0, 1]
    (`visual_pos_dim`=4, passed as `geometry`; FusionModel's `box_geometry` is (y0, x0, y1,
    x1, area) and would not match), VisualBERT's detector features
    (`visual_embedding_dim`). The detectors themselves are not part of these checkpoints.
  * Not supported (ConversionError): VisualBERT's `bypass_transformer=True`; activations
    without a vlx equivalent. VisualBERT's `image_text_alignment` input (visual position
    ids taken from aligned words) is not modelled: visual tokens use position 0 and
    segment 1, HF's default.
  * Attention masks: HF adds finfo.min to masked scores, vlx masks them out in
    `jax.nn.dot_product_attention`; the same unless a query has no visible key at all
    (an all-padding visual or text sequence), which parity inputs avoid.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict, List, Mapping, Tuple

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from vlx.convert import hf
from vlx.convert import mapping as M
from vlx.models import layers
from vlx.families.fusion.stacks import STACKS

# transformers' defaults (config.json may omit keys left at their default value).
LXMERT = dict(vocab_size=30522, hidden_size=768, num_attention_heads=12, intermediate_size=3072,
              hidden_act="gelu", max_position_embeddings=512, type_vocab_size=2, l_layers=9,
              x_layers=5, r_layers=5, visual_feat_dim=2048, visual_pos_dim=4)
VISUAL_BERT = dict(vocab_size=30522, hidden_size=768, visual_embedding_dim=512,
                   num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                   hidden_act="gelu", max_position_embeddings=512, type_vocab_size=2,
                   layer_norm_eps=1e-12, bypass_transformer=False)
LXMERT_EPS = 1e-12  # LxmertModel hard-codes its LayerNorm eps; its config has no such key
# model_type -> (vlx stack, base-model prefix of the task classes' state dicts)
FAMILIES = {"lxmert": ("lxmert", "lxmert."), "visual_bert": ("single_stream", "visual_bert.")}
HF_ACT_TO_VLX = dict(hf.HF_ACT_TO_VLX, relu="relu")


@dataclasses.dataclass
class FusionImport:
  """A converted checkpoint: which stack, its kwargs, params {"stack", "pooler"}, facts."""
  stack: str                 # stacks.STACKS name: lxmert | single_stream
  fusion: Dict[str, Any]     # the stack's constructor kwargs (a fusion model config's `fusion`)
  params: Dict[str, Any]     # {"stack": ..., "pooler": {"kernel", "bias"}} as numpy
  facts: Dict[str, Any]      # family, visual_dim (feature width), box_dim (None: no boxes)


class FusionEncoder(nn.Module):
  """The converted checkpoint's forward in vlx: a stack and FusionModel's pooler, composed as
  `FusionModel.fused` composes them. Returns text states, visual states and the pooled
  [CLS] (LXMERT's language_output / vision_output / pooled_output; VisualBERT's
  last_hidden_state split at the text length, and pooler_output)."""
  stack: str
  fusion: Any
  dtype: Any = jnp.float32

  def setup(self):
    fusion = dict(self.fusion)
    self.body = STACKS.get(self.stack)(dtype=self.dtype, name="stack", **fusion)
    self.pooler = layers.dense(int(fusion["width"]), "embed", "mlp", dtype=self.dtype,
                               param_dtype=jnp.float32, name="pooler")

  def __call__(self, ids, type_ids, t_mask, feats, geometry=None, v_mask=None):
    if v_mask is None:
      v_mask = jnp.ones(feats.shape[:2], bool)
    t_mask, v_mask = t_mask.astype(bool), v_mask.astype(bool)
    t_emb = self.body.embed_text(ids, type_ids)
    v_emb = self.body.embed_visual(feats, geometry)
    t_uni = self.body.encode_text(t_emb, t_mask)
    v_uni = self.body.encode_visual(v_emb, v_mask)
    t_f, v_f = self.body.fuse(t_emb, t_uni, t_mask, v_emb, v_uni, v_mask)
    return {"text": t_f, "visual": v_f, "pooled": jnp.tanh(self.pooler(t_f[:, 0]))}


def _act(name: str) -> str:
  if name not in HF_ACT_TO_VLX:
    raise M.ConversionError(f"hidden_act={name!r} has no vlx equivalent; known: "
                            f"{sorted(HF_ACT_TO_VLX)}")
  return HF_ACT_TO_VLX[name]


def model_config(cfg: Mapping[str, Any]) -> Tuple[str, dict, dict]:
  """HF config dict (config.json, or `PretrainedConfig.to_dict()`) -> (stack, fusion, facts)."""
  family = cfg.get("model_type")
  if family not in FAMILIES:
    raise M.ConversionError(f"model_type {family!r}: vlx imports fusion checkpoints of "
                            f"{sorted(FAMILIES)}")
  defaults = LXMERT if family == "lxmert" else VISUAL_BERT
  c = hf._with_defaults(dict(cfg), defaults, "config")  # pylint: disable=protected-access
  if c["hidden_size"] % c["num_attention_heads"]:
    raise M.ConversionError(f"hidden_size {c['hidden_size']} is not divisible by "
                            f"num_attention_heads {c['num_attention_heads']}")
  fusion = dict(vocab_size=int(c["vocab_size"]), width=int(c["hidden_size"]),
                num_heads=int(c["num_attention_heads"]), mlp_dim=int(c["intermediate_size"]),
                max_len=int(c["max_position_embeddings"]), type_vocab=int(c["type_vocab_size"]),
                act=_act(c["hidden_act"]))
  if family == "lxmert":
    fusion.update(text_depth=int(c["l_layers"]), visual_depth=int(c["r_layers"]),
                  fusion_depth=int(c["x_layers"]), ln_eps=LXMERT_EPS)
    facts = dict(visual_dim=int(c["visual_feat_dim"]), box_dim=int(c["visual_pos_dim"]))
  else:
    if c["bypass_transformer"]:
      raise M.ConversionError("VisualBERT with bypass_transformer=True (text-only encoder, then "
                              "one joint layer) is not supported")
    if c["type_vocab_size"] < 2:
      raise M.ConversionError("VisualBERT needs type_vocab_size >= 2 (visual tokens are "
                              "segment 1)")
    fusion.update(text_depth=int(c["num_hidden_layers"]), visual_depth=0, fusion_depth=0,
                  ln_eps=float(c["layer_norm_eps"]), box_embed=False)
    facts = dict(visual_dim=int(c["visual_embedding_dim"]), box_dim=None)
  facts["family"] = family
  return FAMILIES[family][0], fusion, facts


def _sublayer(att: str, out: str, dst: str, heads: int) -> List[M.Rule]:
  """`att.{query,key,value}` and `out.{dense,LayerNorm}` -> vlx PostNormAttention `dst`."""
  rules = []
  for name in ("query", "key", "value"):
    rules += M.heads_in(f"{att}.{name}", f"{dst}/attn/{name}", heads)
  rules += M.heads_out(f"{out}.dense", f"{dst}/attn/out", heads)
  rules += M.layer_norm(f"{out}.LayerNorm", f"{dst}/ln")
  return rules


def _ffn(inter: str, out: str, dst: str) -> List[M.Rule]:
  """BERT intermediate (`inter.dense`) + output (`out.{dense,LayerNorm}`) -> PostNormMlp `dst`."""
  return (M.linear(f"{inter}.dense", f"{dst}/mlp/fc1") + M.linear(f"{out}.dense", f"{dst}/mlp/fc2")
          + M.layer_norm(f"{out}.LayerNorm", f"{dst}/ln"))


def _bert_layers(src: str, dst: str, depth: int, heads: int) -> List[M.Rule]:
  rules = []
  for i in range(depth):
    s, d = f"{src}.{i}", f"{dst}/layer_{i}"
    rules += _sublayer(f"{s}.attention.self", f"{s}.attention.output", f"{d}/self_attn", heads)
    rules += _ffn(f"{s}.intermediate", f"{s}.output", f"{d}/ffn")
  return rules


def rules(stack: str, fusion: dict) -> List[M.Rule]:
  """HF state-dict keys (base model, no prefix) <-> flat vlx paths under stack/ and pooler/."""
  h, s = fusion["num_heads"], "stack"
  r = [M.copy("embeddings.word_embeddings.weight", f"{s}/text_embed/word_embedding"),
       M.copy("embeddings.position_embeddings.weight", f"{s}/text_embed/pos_embedding"),
       M.copy("embeddings.token_type_embeddings.weight", f"{s}/text_embed/type_embedding")]
  r += M.layer_norm("embeddings.LayerNorm", f"{s}/text_embed/ln")
  r += M.linear("pooler.dense", "pooler")
  if stack == "lxmert":
    v = "encoder.visn_fc"
    r += M.linear(f"{v}.visn_fc", f"{s}/visual_proj")
    r += M.layer_norm(f"{v}.visn_layer_norm", f"{s}/visual_ln")
    r += M.linear(f"{v}.box_fc", f"{s}/box_proj")
    r += M.layer_norm(f"{v}.box_layer_norm", f"{s}/box_ln")
    r += _bert_layers("encoder.layer", f"{s}/text_encoder", fusion["text_depth"], h)
    r += _bert_layers("encoder.r_layers", f"{s}/visual_encoder", fusion["visual_depth"], h)
    for i in range(fusion["fusion_depth"]):
      x, d = f"encoder.x_layers.{i}", f"{s}/cross_{i}"
      r += _sublayer(f"{x}.visual_attention.att", f"{x}.visual_attention.output",
                     f"{d}/cross_attn", h)
      r += _sublayer(f"{x}.lang_self_att.self", f"{x}.lang_self_att.output",
                     f"{d}/text_self_attn", h)
      r += _sublayer(f"{x}.visn_self_att.self", f"{x}.visn_self_att.output",
                     f"{d}/visual_self_attn", h)
      r += _ffn(f"{x}.lang_inter", f"{x}.lang_output", f"{d}/text_ffn")
      r += _ffn(f"{x}.visn_inter", f"{x}.visn_output", f"{d}/visual_ffn")
    return r
  if stack == "single_stream":
    e = "embeddings"
    r += M.linear(f"{e}.visual_projection", f"{s}/visual_proj")
    r += [M.copy(f"{e}.visual_token_type_embeddings.weight", f"{s}/visual_type_embedding"),
          M.copy(f"{e}.visual_position_embeddings.weight", f"{s}/visual_pos_embedding")]
    r += _bert_layers("encoder.layer", f"{s}/encoder", fusion["text_depth"], h)
    return r
  raise M.ConversionError(f"no Hugging Face mapping for stack {stack!r}")


def base_state(state: Mapping[str, Any], family: str) -> Dict[str, Any]:
  """The base model's tensors: a task/pre-training class's state dict loses its prefix
  (`lxmert.`, `visual_bert.`) and its heads (everything outside that prefix)."""
  prefix = FAMILIES[family][1]
  if any(k.startswith(prefix) for k in state):
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
  return dict(state)


def abstract_params(stack: str, fusion: dict, facts: dict) -> M.Flat:
  """Flat '/'-path -> ShapeDtypeStruct of FusionEncoder's params (no compute)."""
  import jax  # pylint: disable=g-import-not-at-top
  from vlx.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  ids = jnp.zeros((1, 2), jnp.int32)
  feats = jnp.zeros((1, 2, facts["visual_dim"]))
  geometry = None if facts["box_dim"] is None else jnp.zeros((1, 2, facts["box_dim"]))
  mask = jnp.ones((1, 2), bool)
  model = FusionEncoder(stack, fusion)
  variables = jax.eval_shape(
      lambda: model.init(jax.random.key(0), ids, ids, mask, feats, geometry, mask))
  return M.flatten(mesh_lib.unbox(variables["params"]))


def import_state(cfg: Mapping[str, Any], state: Mapping[str, Any]) -> FusionImport:
  """HF config dict + state dict (name -> array; torch tensors are converted) -> vlx."""
  stack, fusion, facts = model_config(cfg)
  state = {k: M.to_numpy(v) for k, v in base_state(state, facts["family"]).items()}
  flat = M.import_params(state, rules(stack, fusion), ignore=hf.is_buffer)
  M.check_against(flat, abstract_params(stack, fusion, facts))
  return FusionImport(stack=stack, fusion=fusion, params=M.unflatten(flat), facts=facts)


def import_dir(directory: str) -> FusionImport:
  """A `save_pretrained` directory (config.json + model.safetensors / pytorch_model.bin)."""
  return import_state(hf.read_config(directory), hf.read_state(directory))


def export_state(imported: FusionImport) -> Dict[str, np.ndarray]:
  """The inverse: vlx params {"stack", "pooler"} -> the base model's HF state dict."""
  flat = {k: np.asarray(v, np.float32) for k, v in M.flatten(imported.params).items()}
  M.check_against(flat, abstract_params(imported.stack, imported.fusion, imported.facts))
  return M.export_params(flat, rules(imported.stack, imported.fusion))



# BERT's special tokens (uncased and cased vocabularies alike), used when the directory
# carries no vocab.txt to read them from.
BERT_SPECIAL_IDS = {"pad": 0, "cls": 101, "sep": 102, "mask": 103}
TRAINING_SUBTREES = ("stack", "pooler")


def special_ids(directory: str = None, vocab_size: int = None) -> Dict[str, int]:
  """[PAD], [CLS], [SEP], [MASK] ids: from the directory's vocab.txt, else BERT's."""
  ids = dict(BERT_SPECIAL_IDS)
  path = directory and os.path.join(directory, "vocab.txt")
  if path and os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      vocab = {line.rstrip("\n"): i for i, line in enumerate(f)}
    for name in ids:
      token = f"[{name.upper()}]"
      if token not in vocab:
        raise M.ConversionError(f"{path}: no {token} token")
      ids[name] = vocab[token]
  if ids["pad"] != 0:
    raise M.ConversionError(f"[PAD] is id {ids['pad']}; vlx pads with id 0")
  if vocab_size is not None and max(ids.values()) >= vocab_size:
    raise M.ConversionError(f"special token ids {ids} do not fit the vocabulary of "
                            f"{vocab_size}")
  return ids


def training_params(imported: FusionImport, ids: Mapping[str, int]) -> Dict[str, Any]:
  """FusionEncoder's params -> FusionModel's `stack` and `pooler` (see the module doc)."""
  params = {"stack": {k: v for k, v in imported.params["stack"].items()},
            "pooler": dict(imported.params["pooler"])}
  stack = params["stack"]
  embed = dict(stack["text_embed"])
  word = np.asarray(embed["word_embedding"])
  embed["word_embedding"] = np.concatenate([word, word[[ids["cls"], ids["mask"]]]], 0)
  stack["text_embed"] = embed
  if imported.stack == "lxmert":
    box = dict(stack["box_proj"])
    k = np.asarray(box["kernel"])  # rows: x0, y0, x1, y1
    box["kernel"] = np.concatenate([k[[1, 0, 3, 2]], np.zeros_like(k[:1])], 0)
    stack["box_proj"] = box
  return params


def training_meta(imported: FusionImport, ids: Mapping[str, int], roi_size: int = 2) -> dict:
  """What a fusion config's `ft=DIR` variant reads (vlx/presets/fusion.py): the stack, its
  kwargs without the vocabulary (FusionModel sizes it), the text vocabulary and ids, the ViT
  width that gives region features the checkpoint's width."""
  fusion = {k: v for k, v in imported.fusion.items() if k != "vocab_size"}
  visual_dim = imported.facts["visual_dim"]
  if visual_dim % roi_size ** 2:
    raise M.ConversionError(f"visual feature width {visual_dim} is not roi_size**2 = "
                            f"{roi_size ** 2} times an image width")
  return dict(kind="fusion", family=imported.facts["family"], stack=imported.stack,
              fusion=fusion, vocab_size=int(imported.fusion["vocab_size"]),
              special_ids=dict(ids), roi_size=roi_size, image_width=visual_dim // roi_size ** 2,
              param_subtrees=list(TRAINING_SUBTREES), tokenizer=None)


def save_for_training(imported: FusionImport, out_dir: str, directory: str = None) -> str:
  """Writes `vlx_pretrained.json` and an orbax checkpoint (step 0) of FusionModel's stack and
  pooler, the layout `python -m vlx.convert --out` writes for CLIP (`init_from` reads it)."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  from vlx import convert  # pylint: disable=g-import-not-at-top
  out_dir = os.path.abspath(out_dir)
  meta_path = os.path.join(out_dir, convert.PRETRAINED_JSON)
  if os.path.exists(os.path.join(out_dir, "checkpoints")) or os.path.exists(meta_path):
    raise FileExistsError(f"{out_dir} already holds a converted checkpoint; choose a new --out "
                          "or delete it")
  ids = special_ids(directory, int(imported.fusion["vocab_size"]))
  meta = training_meta(imported, ids)
  params = training_params(imported, ids)
  os.makedirs(out_dir, exist_ok=True)
  relocate = convert._relocate_tokenizer  # pylint: disable=protected-access
  meta["tokenizer"] = relocate(wordpiece_spec(directory), out_dir)  # vocab.txt, if any
  manager = ocp.CheckpointManager(os.path.join(out_dir, "checkpoints"),
                                  options=ocp.CheckpointManagerOptions(create=True))
  manager.save(0, args=ocp.args.Composite(state=ocp.args.StandardSave({"params": params})),
               force=True)
  manager.wait_until_finished()
  manager.close()
  with open(meta_path, "w", encoding="utf-8") as f:
    json.dump(meta, f, indent=2)
  return out_dir


def wordpiece_spec(directory: str = None):
  """The directory's BERT WordPiece tokenizer as a `load_tokenizer` spec (None without a
  vocab.txt): lower-casing and accent stripping from tokenizer_config.json (BERT's uncased
  default without one); no [CLS], which FusionModel prepends itself."""
  path = directory and os.path.join(directory, "vocab.txt")
  if not path or not os.path.exists(path):
    return None
  tok_cfg = {}
  if os.path.exists(os.path.join(directory, "tokenizer_config.json")):
    with open(os.path.join(directory, "tokenizer_config.json"), encoding="utf-8") as f:
      tok_cfg = json.load(f)
  return dict(type="bert_wordpiece", path=path,
              lower_case=bool(tok_cfg.get("do_lower_case", True)),
              strip_accents=tok_cfg.get("strip_accents"), add_cls=False)


def is_fusion_dir(path: str) -> bool:
  """A Hugging Face directory of a model type this module imports."""
  cfg = os.path.join(path, "config.json")
  if not os.path.isfile(cfg):
    return False
  with open(cfg, encoding="utf-8") as f:
    return json.load(f).get("model_type") in FAMILIES


def finetune_from(c, family_stack: str, path: str) -> None:
  """Points a fusion config `c` at a converted checkpoint (`ft=DIR`): init_from, the stack's
  sizes, the text vocabulary and the ViT width the import needs; the data, tasks, heads and
  the rest of the recipe stay the config's."""
  from vlx import convert  # pylint: disable=g-import-not-at-top
  path = os.path.abspath(os.path.expanduser(path))
  meta_path = os.path.join(path, convert.PRETRAINED_JSON)
  if not os.path.exists(meta_path):
    raise ValueError(f"ft={path}: no {convert.PRETRAINED_JSON}; convert the checkpoint first "
                     "with python -m vlx.convert --src=HF_DIR --out=DIR")
  meta = convert.read_meta(path)
  if meta.get("kind") != "fusion":
    raise ValueError(f"ft={path}: not a converted LXMERT / VisualBERT checkpoint")
  if meta["stack"] != family_stack:
    raise ValueError(f"ft={path}: a {meta['family']} import ({meta['stack']} stack); this "
                     f"config's stack is {family_stack} (VisualBERT: configs/uniter.py:ft=DIR, "
                     "LXMERT: configs/lxmert.py:ft=DIR)")
  tokens = c.data.get("source", {}).get("vocab_size", 0)
  if meta.get("tokenizer"):  # the checkpoint's own vocabulary reads the data's text
    c.data.tokenizer = dict(meta["tokenizer"])
    c.model.text.eos_id = meta["special_ids"]["sep"]
  elif meta["vocab_size"] < tokens:
    raise ValueError(f"ft={path}: the checkpoint's vocabulary ({meta['vocab_size']} ids) is "
                     f"smaller than the dataset tokenizer's ({tokens})")
  c.init_from = path
  # remat may be switched on (it keeps the parameter names); scan may not: the import's
  # parameters are per layer (layer_{i}), not stacked.
  c.model.fusion = dict(meta["fusion"], remat="none")
  c.model.roi_size = meta["roi_size"]
  c.model.image.width = meta["image_width"]
  c.model.text.vocab_size = meta["vocab_size"]
  c.model.visual = "regions"
