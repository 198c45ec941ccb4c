"""Hugging Face `PaliGemmaForConditionalGeneration` -> vlx's prefix-LM (`prefix_lm`,
vlx/families/unified/model.py): SigLIP's image tower, the projector and the Gemma decoder.

  imported = hf_paligemma.import_dir("path/to/hf_dir")   # config.json + model.safetensors
  model = vlx.pretrained.load("path/to/hf_dir")            # a PretrainedPaliGemma

Mapping (key names as `save_pretrained` writes them; the in-memory names of transformers 5,
`model.vision_tower.*`, `model.language_model.*`, and an extra `vision_model.` inside the
tower, as older checkpoints have, are read too):
  vision_tower.{embeddings, encoder, post_layernorm}   -> img/... (hf.py's SigLIP tower rules)
  multi_modal_projector.linear                          -> projector
  language_model.model.{embed_tokens, layers, norm}     -> llm/... (hf_gemma.py's rules)
  language_model.lm_head / lm_head                      -> must equal the embedding (tied)

Why the numbers agree (checked by tests/test_paligemma.py):
  * image tokens enter the decoder as the projector's output, unscaled: transformers 5 scales
    only token embeddings by sqrt(width) (inside the embedding layer) and scatters the image
    features in after that; older versions divided the features by sqrt(width) before a
    common scaling, the same net input. PrefixLM scales only `embed_text`.
  * HF numbers positions from 1, vlx from 0: rotary attention reads position differences.
  * HF's prefix is the tokens with `token_type_ids` 0 (image, <bos>, prompt, "\\n"), attended
    bidirectionally; vlx's prompt with `prompt_ar` all 0 is the same mask.

Refused with one ConversionError: a text tower that is not Gemma 1 (PaliGemma 2's Gemma 2),
a vision tower that is not SigLIP, a projection width other than the decoder's, a decoder
activation other than tanh GELU, rope scaling, an untied output head, tensors no rule places.
Dropped: SigLIP's MAP head when a checkpoint carries one (`vision_use_head`; PaliGemma reads
the tokens, never the head).
`python -m vlx.convert --src=HF_DIR --out=DIR` writes a vlx directory (vlx.convert.save) that
`configs/unified.py:ft=DIR` fine-tunes. Left out: export back to Hugging Face.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from vlx.convert import hf, hf_gemma
from vlx.convert import mapping as M

# transformers' GemmaConfig defaults: a config.json's text_config leaves out what equals them
# (PaliGemma's own sub-config defaults apply only when text_config is absent altogether).
GEMMA_TEXT = dict(vocab_size=256_000, hidden_size=3072, intermediate_size=24_576,
                  num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=16,
                  head_dim=256, hidden_act="gelu_pytorch_tanh", rms_norm_eps=1e-6,
                  attention_bias=False, bos_token_id=2, eos_token_id=1, pad_token_id=0)
PALIGEMMA_TEXT = dict(hidden_size=2048, num_hidden_layers=18, intermediate_size=16_384,
                      num_attention_heads=8, num_key_value_heads=1, vocab_size=257_152)
PALIGEMMA_VISION = dict(intermediate_size=4096, hidden_size=1152, patch_size=14, image_size=224,
                        num_hidden_layers=27, num_attention_heads=16)
PALIGEMMA_TOP = dict(image_token_index=256_000, projection_dim=2048)
LOC_START = 256_000   # `<loc0000>` in PaliGemma's tokenizer (then <loc0001> .. <loc1023>)

# Checkpoint key prefixes -> the layout `save_pretrained` writes (first match wins).
_PREFIXES = (("model.vision_tower.vision_model.", "vision_tower."),
             ("model.vision_tower.", "vision_tower."),
             ("vision_tower.vision_model.", "vision_tower."),
             ("model.multi_modal_projector.", "multi_modal_projector."),
             ("model.language_model.", "language_model.model."),
             ("language_model.lm_head.", "lm_head."))
_LM = "language_model.model"


@dataclasses.dataclass
class PaliGemmaImport:
  """A converted PaliGemma: the vlx `prefix_lm` model config, numpy params, facts
  (image_size, num_image_tokens, bos/eos/pad ids, image_token_id, loc_start), the image
  preprocessing and the tokenizer spec (an absolute path; None when the directory has none)."""
  model: Dict[str, Any]
  params: Dict[str, Any]
  facts: Dict[str, Any]
  preprocess: Dict[str, Any]
  tokenizer: Optional[Dict[str, Any]]


def is_paligemma_dir(path: str) -> bool:
  return hf.is_model_type_dir(path, "paligemma")


def _text_config(cfg: Mapping[str, Any]) -> Dict[str, Any]:
  """The text_config with transformers' defaults, in the keys hf_gemma.decoder_fields reads."""
  section = cfg.get("text_config")
  kind = (section or {}).get("model_type", "gemma")
  if kind != "gemma":
    raise M.ConversionError(f"text_config.model_type={kind!r}: vlx imports PaliGemma with a "
                            "Gemma 1 decoder only (PaliGemma 2's Gemma 2 has logit soft-capping, "
                            "sliding-window layers and extra norms vlx's GemmaDecoder lacks)")
  defaults = GEMMA_TEXT if section is not None else dict(GEMMA_TEXT, **PALIGEMMA_TEXT)
  t = dict(defaults)
  t.update({k: v for k, v in (section or {}).items() if v is not None})
  for k in ("bos_token_id", "eos_token_id", "pad_token_id"):  # 4.x configs said them on top
    if (section or {}).get(k) is None and cfg.get(k) is not None:
      t[k] = cfg[k]
    if isinstance(t[k], (list, tuple)):
      if len(t[k]) != 1:
        raise M.ConversionError(f"text_config.{k}={t[k]}: vlx's generator takes one id")
      t[k] = t[k][0]
  # The activation: transformers 4 read `hidden_activation` (None: tanh GELU), 5 reads
  # `hidden_act` and takes the legacy "gelu" for tanh GELU.
  act = (section or {}).get("hidden_activation") or t["hidden_act"]
  t["hidden_activation"] = "gelu_pytorch_tanh" if act == "gelu" else act
  rope = dict(t.get("rope_parameters") or {})
  if t.get("rope_scaling") or rope.get("rope_type", "default") != "default":
    raise M.ConversionError(f"text_config rope {t.get('rope_scaling') or rope}: vlx's "
                            "GemmaDecoder has plain rotary embeddings only")
  t["rope_theta"] = float(rope.get("rope_theta", t.get("rope_theta", 10_000.0)))
  if t.get("final_logit_softcapping") or t.get("attn_logit_softcapping"):
    raise M.ConversionError("text_config has logit soft-capping (Gemma 2): not supported")
  return t


def model_config(cfg: Mapping[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
  """HF config dict -> (vlx `prefix_lm` model config, facts)."""
  if cfg.get("model_type") != "paligemma":
    raise M.ConversionError(f"model_type {cfg.get('model_type')!r}: not a PaliGemma config")
  top = dict(PALIGEMMA_TOP, **{k: cfg[k] for k in PALIGEMMA_TOP if cfg.get(k) is not None})
  if cfg.get("image_token_index") is None and cfg.get("image_token_id") is not None:
    top["image_token_index"] = cfg["image_token_id"]   # the attribute's other name
  t = _text_config(cfg)
  vsec = cfg.get("vision_config")
  kind = (vsec or {}).get("model_type", "siglip_vision_model")
  if kind != "siglip_vision_model":
    raise M.ConversionError(f"vision_config.model_type={kind!r}: vlx imports PaliGemma with "
                            "a SigLIP image tower only")
  v = hf._with_defaults(  # pylint: disable=protected-access
      vsec if vsec is not None else PALIGEMMA_VISION, hf.SIGLIP_VISION, "vision_config")
  if top["projection_dim"] != t["hidden_size"]:
    raise M.ConversionError(f"projection_dim={top['projection_dim']} != text_config."
                            f"hidden_size={t['hidden_size']}: the projector must write the "
                            "decoder's width")
  if v["hidden_size"] % v["num_attention_heads"]:
    raise M.ConversionError("vision_config.hidden_size is not divisible by num_attention_heads")
  if int(v.get("num_channels", 3)) != 3:
    raise M.ConversionError(f"vision_config.num_channels={v['num_channels']}: RGB only")
  decoder = hf_gemma.decoder_fields(t)
  image = dict(patch_size=int(v["patch_size"]), width=v["hidden_size"],
               depth=v["num_hidden_layers"], num_heads=v["num_attention_heads"],
               mlp_dim=v["intermediate_size"], stem="patch", posemb="learn", pool="none",
               pre_norm=False, stem_bias=True, ln_eps=float(v["layer_norm_eps"]),
               act=hf._act(v["hidden_act"], "vision_config"),  # pylint: disable=protected-access
               scan=False, remat="none")
  model = dict(name="prefix_lm", dtype="float32", image=image, decoder=decoder)
  size = int(v["image_size"])
  vocab = int(decoder["vocab_size"])
  facts = dict(family="paligemma", image_size=size,
               num_image_tokens=(size // image["patch_size"]) ** 2,
               image_token_id=int(top["image_token_index"]), bos_id=int(t["bos_token_id"]),
               eos_id=int(t["eos_token_id"]), pad_id=int(t["pad_token_id"]),
               loc_start=LOC_START if vocab >= LOC_START + 1024 else None,
               tied=bool(cfg.get("tie_word_embeddings", True)))
  return model, facts


def _canonical(key: str) -> str:
  for old, new in _PREFIXES:
    if key.startswith(old):
      return new + key[len(old):]
  return key


def _under(prefix: str, rule_list: Sequence[M.Rule]) -> List[M.Rule]:
  """hf_gemma's rules with their vlx paths moved under `prefix/`."""
  return [M.Rule(r.src, [f"{prefix}/{d}" for d in r.dst], r.fwd, r.bwd) for r in rule_list]


def rules(model: Mapping[str, Any], facts: Mapping[str, Any]) -> List[M.Rule]:
  """Checkpoint keys (in `save_pretrained`'s layout) <-> flat vlx `prefix_lm` paths."""
  img = model["image"]
  grid = facts["num_image_tokens"]
  v = "vision_tower"
  r = M.patch_conv(f"{v}.embeddings.patch_embedding", "img/stem/embedding", img["patch_size"])
  r.append(M.reshaped(f"{v}.embeddings.position_embedding.weight", "img/pos_embedding",
                      (1, grid, img["width"]), (grid, img["width"])))
  r += hf._encoder_rules(  # pylint: disable=protected-access
      f"{v}.encoder", "img/encoder", img["depth"], img["num_heads"])
  r += M.layer_norm(f"{v}.post_layernorm", "img/encoder/ln_final")
  r += M.linear("multi_modal_projector.linear", "projector")
  r += _under("llm", hf_gemma.rules(model["decoder"], prefix=_LM))
  return r


def ignored(key: str) -> bool:
  """Tensors PaliGemma holds but never reads: SigLIP's pooling head, position-id buffers."""
  return key.startswith("vision_tower.head.") or hf.is_buffer(key)


def abstract_params(model: Mapping[str, Any], facts: Mapping[str, Any]) -> M.Flat:
  """Flat '/'-path -> ShapeDtypeStruct of the vlx model's params (no compute)."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from vlx.convert import abstract_params_for  # pylint: disable=g-import-not-at-top
  s = facts["image_size"]
  one = jnp.ones((1, 1), jnp.int32)
  return abstract_params_for(dict(model), {"image": jnp.zeros((1, s, s, 3)), "text_in": one,
                                           "mask_ar": one, "input_mask": one})


def import_state(cfg: Mapping[str, Any], state: Mapping[str, Any],
                 tokenizer: Optional[Dict[str, Any]] = None,
                 preprocess: Optional[Dict[str, Any]] = None) -> PaliGemmaImport:
  """HF config dict + state dict (name -> array; torch tensors are converted) -> vlx."""
  model, facts = model_config(cfg)
  canon: Dict[str, np.ndarray] = {}
  for key, value in state.items():
    name = _canonical(key)
    if name in canon:
      raise M.ConversionError(f"checkpoint holds {name} twice (as {key} and in another layout)")
    canon[name] = M.to_numpy(value)
  head = canon.pop("lm_head.weight", None)
  embedding = canon.get(f"{_LM}.embed_tokens.weight")
  if head is None and not facts["tied"]:
    raise M.ConversionError("tie_word_embeddings=False and no lm_head.weight: the output head "
                            "is missing")
  if head is not None and embedding is not None and not np.array_equal(head, embedding):
    raise M.ConversionError("lm_head.weight differs from the input embedding: vlx's "
                            "GemmaDecoder ties them")
  flat = M.import_params(canon, rules(model, facts), ignore=ignored)
  M.check_against(flat, abstract_params(model, facts))
  pp = preprocess or hf.default_preprocess(dict(facts, family="siglip"))
  return PaliGemmaImport(model=model, params=M.unflatten(flat), facts=facts, preprocess=pp,
                         tokenizer=tokenizer)


def read_state(directory: str) -> Dict[str, np.ndarray]:
  """The checkpoint's tensors: one file (hf.read_state's), or the shards a
  `model.safetensors.index.json` lists (how the hub ships PaliGemma's 3B weights)."""
  index = os.path.join(directory, "model.safetensors.index.json")
  if not os.path.exists(index):
    return hf.read_state(directory)
  from vlx.convert import tensors  # pylint: disable=g-import-not-at-top
  with open(index, encoding="utf-8") as f:
    shards = sorted(set(json.load(f)["weight_map"].values()))
  state: Dict[str, np.ndarray] = {}
  for shard in shards:
    state.update(tensors.read(os.path.join(directory, shard)))
  return state


def import_dir(directory: str) -> PaliGemmaImport:
  """A `save_pretrained` directory: config.json + model.safetensors (or its shards, or
  pytorch_model.bin), preprocessor_config.json and the sentencepiece `tokenizer.model` when
  it has them."""
  directory = os.path.abspath(directory)
  cfg = hf.read_config(directory)
  _, facts = model_config(cfg)
  path = os.path.join(directory, "tokenizer.model")
  spec = dict(type="paligemma", path=path) if os.path.exists(path) else None
  pp = hf.preprocess_config(directory, dict(facts, family="siglip"))
  return import_state(cfg, read_state(directory), spec, pp)


class PromptTokenizer:
  """PaliGemma's prompts as its processor builds them: `<bos> + prompt + "\\n"` (the image
  tokens come first, from the image), and generated ids back to text, `<locNNNN>` tokens
  spelled out even when the sentencepiece model lacks them."""

  def __init__(self, path: str, bos_id: int = 2, eos_id: int = 1,
               loc_start: Optional[int] = LOC_START):
    import sentencepiece as spm  # pylint: disable=g-import-not-at-top
    if not os.path.exists(path):
      raise FileNotFoundError(f"no sentencepiece model at {path}")
    self.sp = spm.SentencePieceProcessor(model_file=path)
    self.bos_id, self.eos_id = bos_id, eos_id
    from vlx.data.loc_tokens import LocTokens  # pylint: disable=g-import-not-at-top
    self.loc = LocTokens(loc_start) if loc_start is not None else None

  def encode_prompt(self, prompt: str) -> List[int]:
    return [self.bos_id] + list(self.sp.encode(prompt + "\n"))

  def decode(self, ids) -> List[str]:
    """Rows of ids -> text up to (not including) EOS. Ids past the sentencepiece model (the
    decoder's vocabulary is padded beyond it) are dropped, as HF's tokenizer drops them."""
    out, size = [], self.sp.get_piece_size()
    for row in np.asarray(ids).tolist():
      row = row[:row.index(self.eos_id)] if self.eos_id in row else row
      text, run = [], []
      for t in row:
        if t < size:
          run.append(t)
        elif self.loc is not None and self.loc.is_loc(t):
          text += [self.sp.decode(run), f"<loc{t - self.loc.start:04d}>"]
          run = []
      out.append("".join(text) + self.sp.decode(run))
    return out


class MissingPromptTokenizer:
  """Stands in when the directory has no `tokenizer.model`: pixels and prompt ids still
  generate (`generate_ids`); only strings are refused, in one line."""

  def __init__(self, where: str):
    self.where = where

  def encode_prompt(self, prompt):
    del prompt
    raise FileNotFoundError(
        f"{self.where} has no tokenizer.model (PaliGemma's sentencepiece model), so prompts "
        "cannot be tokenized nor answers decoded; copy it into the directory, or pass prompt "
        "ids to generate_ids")

  decode = encode_prompt


__all__ = ["PaliGemmaImport", "PromptTokenizer", "MissingPromptTokenizer", "is_paligemma_dir",
           "model_config", "rules", "import_state", "import_dir"]
