"""open_clip `CLIP` / `CustomTextCLIP` checkpoints (ViT towers) <-> vlx `two_tower`.

An open_clip checkpoint is a state dict (`.safetensors`, or `.pt`/`.bin` through torch) plus
its model config: the `model_cfg` of an `open_clip_config.json` (the Hugging Face hub layout),
a model-config JSON file, or the name of a config shipped with an installed open_clip.
Options vlx has no equivalent for (timm or HF towers, layer scale, attentional pooler, custom
attention blocks) are refused by name rather than converted approximately.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import math
import os
from typing import List, Optional, Tuple

from vlx.convert import mapping as M
from vlx.convert.hf import CLIP_MEAN, CLIP_STD

VISION_DEFAULTS = dict(layers=12, width=768, head_width=64, mlp_ratio=4.0, patch_size=16,
                       image_size=224, ls_init_value=None, patch_dropout=0.0,
                       attentional_pool=False, no_ln_pre=False, pos_embed_type="learnable",
                       final_ln_after_pool=False, pool_type="tok", output_tokens=False,
                       act_kwargs=None, norm_kwargs=None, block_type=None, qk_norm=False,
                       scaled_cosine_attn=False, scale_heads=False, scale_attn_inner=False,
                       scale_attn=False, scale_fc=False, timm_model_name=None)
TEXT_DEFAULTS = dict(context_length=77, vocab_size=49408, hf_tokenizer_name=None,
                     tokenizer_mode=None, tokenizer_kwargs=None, width=512, heads=8, layers=12,
                     mlp_ratio=4.0, ls_init_value=None, embed_cls=False, pad_id=0, eos_id=2,
                     no_causal_mask=False, final_ln_after_pool=False, pool_type="argmax",
                     proj_bias=False, proj_type="linear", output_tokens=False, act_kwargs=None,
                     norm_kwargs=None, block_type=None, qk_norm=False, scaled_cosine_attn=False,
                     scale_heads=False, scale_attn_inner=False, scale_attn=False, scale_fc=False,
                     hf_model_name=None)
# Options whose value changes nothing at inference (dropout-like) or that vlx handles.
_HARMLESS = {"patch_dropout", "output_tokens", "tokenizer_kwargs", "tokenizer_mode"}
_SUPPORTED_TOP = {"embed_dim", "vision_cfg", "text_cfg", "quick_gelu", "custom_text",
                  "init_logit_scale", "init_logit_bias", "cast_dtype"}


def find_model_config(name_or_path: str) -> dict:
  """A model config dict from a JSON file, an open_clip_config.json, or a shipped config name."""
  if os.path.isfile(name_or_path):
    with open(name_or_path, encoding="utf-8") as f:
      cfg = json.load(f)
    return cfg.get("model_cfg", cfg)
  spec = importlib.util.find_spec("open_clip")
  if spec is not None and spec.submodule_search_locations:
    root = list(spec.submodule_search_locations)[0]
    path = os.path.join(root, "model_configs", f"{name_or_path}.json")
    if os.path.exists(path):
      with open(path, encoding="utf-8") as f:
        return json.load(f)
  raise FileNotFoundError(f"open_clip model config {name_or_path!r}: not a JSON file, and no "
                          "installed open_clip ships a config by that name")


def _check(section: dict, defaults: dict, where: str) -> dict:
  unknown = sorted(set(section) - set(defaults))
  if unknown:
    raise M.ConversionError(f"open_clip {where} has keys vlx does not know: {unknown}")
  cfg = dict(defaults, **section)
  changed = sorted(k for k in cfg if k not in _HARMLESS and cfg[k] != defaults[k]
                   and k not in _ALLOWED_CHANGES[where])
  if changed:
    raise M.ConversionError(f"open_clip {where} options without a vlx equivalent: " + ", ".join(
        f"{k}={cfg[k]!r}" for k in changed))
  return cfg


_ALLOWED_CHANGES = {
    "vision_cfg": {"layers", "width", "head_width", "mlp_ratio", "patch_size", "image_size"},
    "text_cfg": {"context_length", "vocab_size", "width", "heads", "layers", "mlp_ratio",
                 "pool_type", "eos_id", "pad_id", "proj_bias", "hf_tokenizer_name"},
}


def model_config(oc: dict) -> Tuple[dict, dict]:
  """open_clip model config -> (vlx model config, facts)."""
  unknown = sorted(set(oc) - _SUPPORTED_TOP)
  if unknown:
    raise M.ConversionError(f"open_clip model config has keys vlx does not know: {unknown}")
  v = _check(oc.get("vision_cfg", {}), VISION_DEFAULTS, "vision_cfg")
  t = _check(oc.get("text_cfg", {}), TEXT_DEFAULTS, "text_cfg")
  if isinstance(v["layers"], (list, tuple)):
    raise M.ConversionError("open_clip ResNet image towers (vision_cfg.layers is a list) are not "
                            "supported; vlx imports ViT towers")
  if isinstance(v["image_size"], (list, tuple)):
    if len(set(v["image_size"])) != 1:
      raise M.ConversionError(f"non-square image_size {v['image_size']}")
    v["image_size"] = v["image_size"][0]
  if t["pool_type"] not in ("argmax", "eos", "last", "first"):
    raise M.ConversionError(f"text_cfg.pool_type={t['pool_type']!r} is not supported")
  if t["hf_tokenizer_name"]:
    raise M.ConversionError(f"text_cfg.hf_tokenizer_name={t['hf_tokenizer_name']!r}: vlx imports "
                            "open_clip models that use OpenAI's BPE tokenizer")
  act = "quick_gelu" if oc.get("quick_gelu") else "gelu"
  # open_clip's "last" is the final position whatever the padding (vlx's "final").
  pool = {"argmax": "argmax", "eos": "eot", "last": "final", "first": "first"}[t["pool_type"]]
  bias = oc.get("init_logit_bias")
  model = dict(
      name="two_tower", embed_dim=int(oc["embed_dim"]), dtype="float32",
      temperature_init=float(math.exp(oc.get("init_logit_scale", math.log(1 / 0.07)))),
      bias_init=None if bias is None else float(bias),
      image_projection="linear", text_projection="linear_bias" if t["proj_bias"] else "linear",
      image=dict(patch_size=int(v["patch_size"]), width=v["width"], depth=v["layers"],
                 num_heads=v["width"] // v["head_width"], mlp_dim=int(v["width"] * v["mlp_ratio"]),
                 pool="cls", stem="patch", posemb="learn", pre_norm=True, stem_bias=False,
                 ln_eps=1e-5, act=act, scan=False, remat="none"),
      text=dict(vocab_size=t["vocab_size"], max_len=t["context_length"], width=t["width"],
                depth=t["layers"], num_heads=t["heads"], mlp_dim=int(t["width"] * t["mlp_ratio"]),
                causal=True, pool=pool, eos_id=t["eos_id"] if pool == "eot" else 49407,
                mask_padding=False, ln_eps=1e-5, act=act, scan=False, remat="none"))
  facts = dict(family="open_clip", image_size=int(v["image_size"]), max_len=t["context_length"],
               custom_text=bool(oc.get("custom_text")))
  return model, facts


def _blocks(src: str, dst: str, depth: int, heads: int) -> List[M.Rule]:
  rules = []
  for i in range(depth):
    s, d = f"{src}.resblocks.{i}", f"{dst}/layer_{i}"
    rules += M.layer_norm(f"{s}.ln_1", f"{d}/ln_attn")
    rules += M.packed_qkv(f"{s}.attn", f"{d}/attn", heads)
    rules += M.layer_norm(f"{s}.ln_2", f"{d}/ln_mlp")
    rules += M.linear(f"{s}.mlp.c_fc", f"{d}/mlp/fc1")
    rules += M.linear(f"{s}.mlp.c_proj", f"{d}/mlp/fc2")
  return rules


def rules(model: dict, facts: dict) -> List[M.Rule]:
  img, txt = model["image"], model["text"]
  t = "text." if facts.get("custom_text") else ""
  r = M.patch_conv("visual.conv1", "img/stem/embedding", img["patch_size"], bias=False)
  r.append(M.class_token("visual.class_embedding", "visual.positional_embedding", "img/cls",
                         "img/pos_embedding"))
  r += M.layer_norm("visual.ln_pre", "img/ln_pre")
  r += _blocks("visual.transformer", "img/encoder", img["depth"], img["num_heads"])
  r += M.layer_norm("visual.ln_post", "img/encoder/ln_final")
  r.append(M.matrix("visual.proj", "img_proj"))
  r.append(M.copy(f"{t}token_embedding.weight", "txt/token_embedding"))
  r.append(M.reshaped(f"{t}positional_embedding", "txt/pos_embedding",
                      (1, txt["max_len"], txt["width"]), (txt["max_len"], txt["width"])))
  r += _blocks(f"{t}transformer", "txt/encoder", txt["depth"], txt["num_heads"])
  r += M.layer_norm(f"{t}ln_final", "txt/encoder/ln_final")
  if model["text_projection"] == "linear_bias":
    r += M.linear(f"{t}text_projection", "txt_proj")
  else:
    r.append(M.matrix(f"{t}text_projection", "txt_proj"))
  r.append(M.copy("logit_scale", "logit_scale"))
  if model.get("bias_init") is not None:
    r.append(M.copy("logit_bias", "logit_bias"))
  return r


def is_buffer(key: str) -> bool:
  return key.endswith("attn_mask") or key.endswith("position_ids")


def locate(path: str, model_config_name: Optional[str] = None) -> Tuple[str, dict, dict]:
  """(weights file, model config, preprocess config) for a directory or a weights file."""
  preprocess = {}
  if os.path.isdir(path):
    cfg_path = os.path.join(path, "open_clip_config.json")
    if not os.path.exists(cfg_path) and not model_config_name:
      raise FileNotFoundError(f"{path}: no open_clip_config.json; pass the model config")
    weights = None
    # open_clip's own files first; hub snapshots may also hold the HF layout's weights.
    hf_files = {"model.safetensors", "pytorch_model.bin"}
    for pattern in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin",
                    "*.safetensors", "*.bin", "*.pt"):
      found = sorted(f for f in glob.glob(os.path.join(path, pattern))
                     if os.path.basename(f) not in hf_files)
      if found:
        weights = found[0]
        break
    if weights is None:
      raise FileNotFoundError(f"{path}: no .safetensors, .bin or .pt weights")
    if os.path.exists(cfg_path):
      with open(cfg_path, encoding="utf-8") as f:
        full = json.load(f)
      preprocess = full.get("preprocess_cfg", {})
      oc = full.get("model_cfg", full)
    if model_config_name:
      oc = find_model_config(model_config_name)
  else:
    weights = path
    if not model_config_name:
      raise ValueError(f"{path}: an open_clip weights file needs its model config "
                       "(a JSON file or a config name)")
    oc = find_model_config(model_config_name)
  return weights, oc, preprocess


def preprocess_config(pp: dict, facts: dict) -> dict:
  size = pp.get("size", facts["image_size"])
  size = size[0] if isinstance(size, (list, tuple)) else size
  mode = pp.get("resize_mode", "shortest")
  if mode not in ("shortest", "squash"):
    raise M.ConversionError(f"open_clip resize_mode={mode!r} is not supported")
  return dict(resize=int(size), resize_mode=mode, crop=int(size) if mode == "shortest" else None,
              mean=tuple(pp.get("mean", CLIP_MEAN)), std=tuple(pp.get("std", CLIP_STD)),
              resample=pp.get("interpolation", "bicubic"), crop_rounding="round")
