"""Hugging Face `CLIPModel` / `SiglipModel` checkpoints <-> vlx `two_tower` configs and params.

Reads what `save_pretrained` writes (`config.json` + `model.safetensors`), applying the
library's defaults for keys that `config.json` leaves out, and writes the same layout
back (`export`), so a model fine-tuned in vlx can return to the PyTorch ecosystem.
"""

from __future__ import annotations

import json
import math
import os
from typing import Dict, List, Tuple

import numpy as np

from vlx.convert import mapping as M

# transformers' defaults (config.json omits keys left at their default value).
CLIP_TEXT = dict(vocab_size=49408, hidden_size=512, intermediate_size=2048, projection_dim=512,
                 num_hidden_layers=12, num_attention_heads=8, max_position_embeddings=77,
                 hidden_act="quick_gelu", layer_norm_eps=1e-5, pad_token_id=1,
                 bos_token_id=49406, eos_token_id=49407)
CLIP_VISION = dict(hidden_size=768, intermediate_size=3072, projection_dim=512,
                   num_hidden_layers=12, num_attention_heads=12, num_channels=3, image_size=224,
                   patch_size=32, hidden_act="quick_gelu", layer_norm_eps=1e-5)
CLIP_TOP = dict(projection_dim=512, logit_scale_init_value=2.6592)
SIGLIP_TEXT = dict(vocab_size=32000, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                   num_attention_heads=12, max_position_embeddings=64,
                   hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6, pad_token_id=1,
                   bos_token_id=49406, eos_token_id=49407, projection_size=None)
SIGLIP_VISION = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                     num_attention_heads=12, num_channels=3, image_size=224, patch_size=16,
                     hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6, vision_use_head=True)

HF_ACT_TO_VLX = {"quick_gelu": "quick_gelu", "gelu": "gelu", "gelu_pytorch_tanh": "gelu_tanh",
                 "gelu_new": "gelu_tanh", "gelu_fast": "gelu_tanh"}
VLX_ACT_TO_HF = {"quick_gelu": "quick_gelu", "gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh"}

# HF preprocessing when the directory has no preprocessor_config.json.
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def _with_defaults(section: dict, defaults: dict, where: str) -> dict:
  out = dict(defaults)
  out.update({k: v for k, v in (section or {}).items() if v is not None or k not in defaults})
  for key in ("image_size", "patch_size"):
    if isinstance(out.get(key), (list, tuple)):
      if len(set(out[key])) != 1:
        raise M.ConversionError(f"{where}.{key}={out[key]}: only square sizes are supported")
      out[key] = out[key][0]
  return out


def _act(name: str, where: str) -> str:
  if name not in HF_ACT_TO_VLX:
    raise M.ConversionError(f"{where}.hidden_act={name!r} has no vlx equivalent; known: "
                            f"{sorted(HF_ACT_TO_VLX)}")
  return HF_ACT_TO_VLX[name]


def is_model_type_dir(path: str, model_type: str) -> bool:
  """Whether `path` is a Hugging Face directory whose config.json names `model_type`."""
  if not os.path.isdir(path) or not os.path.isfile(os.path.join(path, "config.json")):
    return False
  return read_config(path).get("model_type") == model_type


def read_config(directory: str) -> dict:
  path = os.path.join(directory, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{directory}: no config.json (not a Hugging Face model directory)")
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def model_config(hf: dict) -> Tuple[dict, dict]:
  """HF config dict -> (vlx model config, facts: image_size, max_len, family)."""
  family = hf.get("model_type")
  if family == "clip":
    t = _with_defaults(hf.get("text_config"), CLIP_TEXT, "text_config")
    v = _with_defaults(hf.get("vision_config"), CLIP_VISION, "vision_config")
    top = _with_defaults({k: hf[k] for k in CLIP_TOP if k in hf}, CLIP_TOP, "config")
    embed_dim = top["projection_dim"]
    # Before transformers PR #24773 configs said eos_token_id=2 and pooling took the argmax id.
    pool = "argmax" if t["eos_token_id"] == 2 else "eot"
    image = dict(pool="cls", pre_norm=True, stem_bias=False)
    text = dict(causal=True, pool=pool, eos_id=int(t["eos_token_id"]))
    heads = dict(image_projection="linear", text_projection="linear", bias_init=None,
                 temperature_init=float(math.exp(top["logit_scale_init_value"])))
  elif family == "siglip":
    t = _with_defaults(hf.get("text_config"), SIGLIP_TEXT, "text_config")
    v = _with_defaults(hf.get("vision_config"), SIGLIP_VISION, "vision_config")
    if not v["vision_use_head"]:
      raise M.ConversionError("vision_config.vision_use_head=False: SigLIP without its MAP head "
                              "has no image embedding; not supported")
    embed_dim = t["projection_size"] or t["hidden_size"]
    if embed_dim != v["hidden_size"]:
      raise M.ConversionError(f"SigLIP text projection {embed_dim} != vision width "
                              f"{v['hidden_size']}: the image tower has no projection")
    image = dict(pool="map", pre_norm=False, stem_bias=True)
    text = dict(causal=False, pool="final", eos_id=1)
    heads = dict(image_projection="none", text_projection="linear_bias", bias_init=0.0,
                 temperature_init=1.0)
  else:
    raise M.ConversionError(f"model_type {family!r}: vlx imports clip and siglip checkpoints")
  if v["hidden_size"] % v["num_attention_heads"] or t["hidden_size"] % t["num_attention_heads"]:
    raise M.ConversionError("hidden_size is not divisible by num_attention_heads")
  model = dict(
      name="two_tower", embed_dim=int(embed_dim), dtype="float32", **heads,
      image=dict(patch_size=int(v["patch_size"]), width=v["hidden_size"],
                 depth=v["num_hidden_layers"], num_heads=v["num_attention_heads"],
                 mlp_dim=v["intermediate_size"], stem="patch", posemb="learn",
                 ln_eps=float(v["layer_norm_eps"]), act=_act(v["hidden_act"], "vision_config"),
                 scan=False, remat="none", **image),
      text=dict(vocab_size=t["vocab_size"], max_len=t["max_position_embeddings"],
                width=t["hidden_size"], depth=t["num_hidden_layers"],
                num_heads=t["num_attention_heads"], mlp_dim=t["intermediate_size"],
                mask_padding=False, ln_eps=float(t["layer_norm_eps"]),
                act=_act(t["hidden_act"], "text_config"), scan=False, remat="none", **text))
  facts = dict(family=family, image_size=int(v["image_size"]),
               max_len=int(t["max_position_embeddings"]))
  return model, facts


def _encoder_rules(src: str, dst: str, depth: int, heads: int) -> List[M.Rule]:
  rules = []
  for i in range(depth):
    s, d = f"{src}.layers.{i}", f"{dst}/layer_{i}"
    for proj, name in (("q_proj", "query"), ("k_proj", "key"), ("v_proj", "value")):
      rules += M.heads_in(f"{s}.self_attn.{proj}", f"{d}/attn/{name}", heads)
    rules += M.heads_out(f"{s}.self_attn.out_proj", f"{d}/attn/out", heads)
    rules += M.layer_norm(f"{s}.layer_norm1", f"{d}/ln_attn")
    rules += M.layer_norm(f"{s}.layer_norm2", f"{d}/ln_mlp")
    rules += M.linear(f"{s}.mlp.fc1", f"{d}/mlp/fc1")
    rules += M.linear(f"{s}.mlp.fc2", f"{d}/mlp/fc2")
  return rules


def rules(model: dict, facts: dict) -> List[M.Rule]:
  img, txt = model["image"], model["text"]
  p = img["patch_size"]
  grid = (facts["image_size"] // p) ** 2
  v, t = "vision_model", "text_model"
  r = M.patch_conv(f"{v}.embeddings.patch_embedding", "img/stem/embedding", p,
                   bias=img["stem_bias"])
  r += _encoder_rules(f"{v}.encoder", "img/encoder", img["depth"], img["num_heads"])
  r += _encoder_rules(f"{t}.encoder", "txt/encoder", txt["depth"], txt["num_heads"])
  r += [M.copy(f"{t}.embeddings.token_embedding.weight", "txt/token_embedding"),
        M.reshaped(f"{t}.embeddings.position_embedding.weight", "txt/pos_embedding",
                   (1, txt["max_len"], txt["width"]), (txt["max_len"], txt["width"]))]
  r += M.layer_norm(f"{t}.final_layer_norm", "txt/encoder/ln_final")
  if facts["family"] == "clip":
    # HF gives the class token a position; vlx folds that position into the class token.
    r.append(M.class_token(f"{v}.embeddings.class_embedding",
                           f"{v}.embeddings.position_embedding.weight", "img/cls",
                           "img/pos_embedding"))
    r += M.layer_norm(f"{v}.pre_layrnorm", "img/ln_pre")
    r += M.layer_norm(f"{v}.post_layernorm", "img/encoder/ln_final")
    r += M.linear("visual_projection", "img_proj", bias=False)
    r += M.linear("text_projection", "txt_proj", bias=False)
    r.append(M.copy("logit_scale", "logit_scale"))
  else:
    r.append(M.reshaped(f"{v}.embeddings.position_embedding.weight", "img/pos_embedding",
                        (1, grid, img["width"]), (grid, img["width"])))
    r += M.layer_norm(f"{v}.post_layernorm", "img/encoder/ln_final")
    h = f"{v}.head"
    r.append(M.reshaped(f"{h}.probe", "img/map_head/probe", (1, img["width"]),
                        (1, 1, img["width"])))
    r += M.packed_qkv(f"{h}.attention", "img/map_head/attn", img["num_heads"])
    r += M.layer_norm(f"{h}.layernorm", "img/map_head/ln")
    r += M.linear(f"{h}.mlp.fc1", "img/map_head/mlp/fc1")
    r += M.linear(f"{h}.mlp.fc2", "img/map_head/mlp/fc2")
    r += M.linear(f"{t}.head", "txt_proj")
    r += [M.reshaped("logit_scale", "logit_scale", (), (1,)),
          M.reshaped("logit_bias", "logit_bias", (), (1,))]
  return r


def is_buffer(key: str) -> bool:
  """Non-parameter tensors some checkpoints carry (position id ranges)."""
  return key.endswith("position_ids")


def default_preprocess(facts: dict) -> dict:
  """The family's image preprocessing when a directory says nothing about it."""
  size = facts["image_size"]
  if facts["family"] == "clip":
    return dict(resize=size, resize_mode="shortest", crop=size, mean=CLIP_MEAN, std=CLIP_STD,
                resample="bicubic", crop_rounding="floor")
  if facts["family"] == "xclip":  # XCLIPProcessor's frames: VideoMAEImageProcessor's defaults
    return dict(resize=size, resize_mode="shortest", crop=size, mean=(0.5,) * 3, std=(0.5,) * 3,
                resample="bilinear", crop_rounding="floor")
  return dict(resize=size, resize_mode="squash", crop=None, mean=(0.5,) * 3, std=(0.5,) * 3,
              resample="bicubic", crop_rounding="floor")


def preprocess_config(directory: str, facts: dict) -> dict:
  """vlx image preprocessing from preprocessor_config.json, or the family's defaults."""
  out = default_preprocess(facts)
  path = os.path.join(directory, "preprocessor_config.json")
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      pp = json.load(f)
    size_cfg = pp.get("size")
    if isinstance(size_cfg, dict) and "shortest_edge" in size_cfg:
      out.update(resize=int(size_cfg["shortest_edge"]), resize_mode="shortest")
    elif isinstance(size_cfg, dict) and "height" in size_cfg:
      out.update(resize=int(size_cfg["height"]), resize_mode="squash")
    elif isinstance(size_cfg, int):
      out.update(resize=size_cfg)
    crop = pp.get("crop_size")
    if pp.get("do_center_crop", out["crop"] is not None) and crop:
      out["crop"] = int(crop["height"] if isinstance(crop, dict) else crop)
    elif not pp.get("do_center_crop", True):
      out["crop"] = None
    if pp.get("image_mean"):
      out["mean"], out["std"] = tuple(pp["image_mean"]), tuple(pp["image_std"])
    if "resample" in pp:  # else the family's default
      out["resample"] = {0: "nearest", 2: "bilinear", 3: "bicubic"}.get(pp["resample"],
                                                                        "bicubic")
  return out


def tokenizer_spec(directory: str, facts: dict) -> Dict:
  """Where this directory's tokenizer lives (None when it ships none)."""
  if facts["family"] == "clip":
    if any(os.path.exists(os.path.join(directory, n)) for n in ("vocab.json", "tokenizer.json")):
      return dict(type="clip_bpe", dir=".", normalization="hf")
    return None
  if os.path.exists(os.path.join(directory, "spiece.model")):
    return dict(type="siglip", path="spiece.model")
  return None


def read_state(directory: str) -> Dict[str, np.ndarray]:
  from vlx.convert import tensors  # pylint: disable=g-import-not-at-top
  for name in ("model.safetensors", "pytorch_model.bin"):
    path = os.path.join(directory, name)
    if os.path.exists(path):
      return tensors.read(path)
  raise FileNotFoundError(f"{directory}: no model.safetensors or pytorch_model.bin")


def hf_config(model: dict, image_size: int) -> dict:
  """The config.json of a vlx two_tower that has the CLIP or SigLIP layout (for export)."""
  layout = export_layout(model)
  img, txt = model["image"], model["text"]
  def mlp(tower):
    return tower.get("mlp_dim") or int(tower["width"] * tower.get("mlp_ratio", 4.0))
  def act(tower):  # export_layout has checked that it has a name
    return VLX_ACT_TO_HF[tower.get("act", "gelu_tanh")]
  text = dict(vocab_size=txt["vocab_size"], hidden_size=txt["width"], intermediate_size=mlp(txt),
              num_hidden_layers=txt["depth"], num_attention_heads=txt["num_heads"],
              max_position_embeddings=txt["max_len"], hidden_act=act(txt),
              layer_norm_eps=txt.get("ln_eps", 1e-6))
  vision = dict(hidden_size=img["width"], intermediate_size=mlp(img),
                num_hidden_layers=img["depth"], num_attention_heads=img["num_heads"],
                num_channels=3, image_size=image_size, patch_size=img["patch_size"],
                hidden_act=act(img), layer_norm_eps=img.get("ln_eps", 1e-6))
  if layout == "clip":
    eos = int(txt.get("eos_id", 49407))
    # CLIP vocabularies end with <start>, <end>; pad ids are never read (causal + EOT pooling).
    text.update(projection_dim=model["embed_dim"], eos_token_id=eos, bos_token_id=eos - 1,
                pad_token_id=eos)
    vision.update(projection_dim=model["embed_dim"])
    return dict(model_type="clip", architectures=["CLIPModel"], projection_dim=model["embed_dim"],
                text_config=text, vision_config=vision)
  text.update(projection_size=model["embed_dim"], eos_token_id=1, pad_token_id=1,
              bos_token_id=None)
  return dict(model_type="siglip", architectures=["SiglipModel"], text_config=text,
              vision_config=dict(vision, vision_use_head=True))


# What each Hugging Face layout fixes, as (key in the vlx model config, vlx default, allowed
# values, what the HF model has instead). Defaults are those of vlx's ViT / TextTransformer /
# TwoTower modules, so a config that leaves a key out is judged by what it builds.
_LAYOUTS = {
    "clip": (
        ("image.stem", "patch", ("patch",), "a patch-convolution stem"),
        ("image.posemb", "learn", ("learn",), "learned position embeddings"),
        ("image.pool", "gap", ("cls",), "a class token"),
        ("image.pre_norm", False, (True,), "a layer norm before the encoder (pre_layrnorm)"),
        ("image.stem_bias", True, (False,), "a patch convolution without bias"),
        ("text.causal", True, (True,), "causal text attention"),
        ("text.pool", "eot", ("eot", "argmax"), "text pooled at the end-of-text token"),
        ("image_projection", "linear", ("linear",), "a bias-free image projection"),
        ("text_projection", "linear", ("linear",), "a bias-free text projection"),
        ("bias_init", None, (None,), "no logit bias"),
    ),
    "siglip": (
        ("image.stem", "patch", ("patch",), "a patch-convolution stem"),
        ("image.posemb", "learn", ("learn",), "learned position embeddings"),
        ("image.pool", "gap", ("map",), "a MAP attention-pooling head"),
        ("image.pre_norm", False, (False,), "no layer norm before the encoder"),
        ("image.stem_bias", True, (True,), "a patch convolution with bias"),
        ("text.causal", True, (False,), "bidirectional text attention"),
        ("text.pool", "eot", ("final",), "text pooled at the final position"),
        ("image_projection", "linear", ("none",), "no image projection"),
        ("text_projection", "linear", ("linear_bias",), "a text projection with bias"),
    ),
}


_TITLE = {"clip": "CLIP", "siglip": "SigLIP"}


def _get(model: dict, key: str, default):
  node = model
  for part in key.split("."):
    if not isinstance(node, dict) or part not in node:
      return default
    node = node[part]
  return node


def _layout_mismatches(model: dict, layout: str) -> List[str]:
  out = []
  for key, default, allowed, wanted in _LAYOUTS[layout]:
    value = _get(model, key, default)
    if value not in allowed:
      out.append(f"{key}={value!r} (HF {_TITLE[layout]} has {wanted})")
  if layout == "siglip":
    if _get(model, "bias_init", None) is None:
      out.append("bias_init=None (HF SigLIP has a logit bias)")
    if model.get("embed_dim") != _get(model, "image.width", None):
      out.append(f"embed_dim={model.get('embed_dim')} != image.width="
                 f"{_get(model, 'image.width', None)} (HF SigLIP has no image projection)")
  for tower in ("image", "text"):
    act = _get(model, f"{tower}.act", "gelu_tanh")
    if act not in VLX_ACT_TO_HF:
      out.append(f"{tower}.act={act!r} (no Hugging Face activation of that name)")
  return out


def export_layout(model: dict) -> str:
  """'clip' or 'siglip': the HF layout a vlx model config can be written in. Anything else
  raises one line naming what HF cannot express (checked from the config alone, before any
  weights are read)."""
  name = model.get("name", "two_tower")
  if name != "two_tower":
    raise M.ConversionError(
        f"cannot export model {name!r} to Hugging Face: only two_tower (CLIP / SigLIP) models "
        f"have a CLIPModel or SiglipModel equivalent")
  found = {layout: _layout_mismatches(model, layout) for layout in _LAYOUTS}
  for layout, bad in found.items():
    if not bad:
      return layout
  layout = min(found, key=lambda k: len(found[k]))
  raise M.ConversionError(
      f"cannot export to Hugging Face: not expressible as "
      f"{'CLIPModel' if layout == 'clip' else 'SiglipModel'} (the closer layout): "
      f"{'; '.join(found[layout])}")


def preprocessor_config(pp: dict) -> dict:
  """preprocessor_config.json for a vlx preprocess config (`vlx.pretrained`'s), so that
  `AutoImageProcessor` / `AutoProcessor` prepare images as vlx does."""
  resample = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3}[pp.get("resample",
                                                                            "bicubic")]
  size = int(pp["resize"])
  shortest = pp.get("resize_mode", "shortest") == "shortest"
  crop = pp.get("crop")  # HF crops at (h - size) // 2 (vlx's "floor"; open_clip's rounding
  # of the margin can differ by one pixel row)
  return dict(
      image_processor_type="CLIPImageProcessor",
      do_resize=True,
      size={"shortest_edge": size} if shortest else {"height": size, "width": size},
      resample=resample,
      do_center_crop=bool(crop),
      crop_size={"height": int(crop or size), "width": int(crop or size)},
      do_rescale=True, rescale_factor=1 / 255,
      do_normalize=True, image_mean=list(pp.get("mean", (0.5,) * 3)),
      image_std=list(pp.get("std", (0.5,) * 3)),
      do_convert_rgb=True)
