"""Hugging Face `XCLIPModel` weights -> vlx's `xclip` model (vlx/families/video_transfer).

  imported = hf_xclip.import_dir("path/to/hf_dir")   # config.json + model.safetensors
  model = vlx.pretrained.load("path/to/hf_dir")       # a PretrainedXClip (vlx/pretrained.py)

X-CLIP is a CLIP with three additions, each mapped to its vlx piece:
  vision_model.encoder.layers.{i}.message_{fc,ln,attn}  -> img/encoder/layer_{i}/message_*
        (cross-frame message tokens; vlx's `message_gate` is set to 1, X-CLIP's attention,
        and its message time table to zeros, X-CLIP having none)
  mit.position_embedding, mit.encoder.layers.{i}          -> temporal/time_pos_embedding,
        temporal/encoder/layer_{i} (the multi-frame integration transformer)
  prompts_visual_layernorm, prompts_visual_projection     -> prompts_visual_ln,
        prompts_visual_proj
  prompts_generator.{layernorm, decoder.{i}, alpha}       -> prompts/{ln_visual, layer_{i},
        alpha} (its bias-free q/k/v projections get zero biases)
The CLIP part maps as a HF CLIPModel does (vlx/convert/hf.py), `pre_layernorm` for CLIP's
`pre_layrnorm`.

Frames are preprocessed as the directory's preprocessor_config.json says (XCLIPProcessor's
VideoMAEImageProcessor: shortest side resized, centre crop, normalised; its defaults without
one).

Left out: `interpolate_pos_encoding`, export back to Hugging Face, and writing a converted
directory (`python -m vlx.convert`): load the Hugging Face directory itself.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, List, Mapping, Optional

import numpy as np

from vlx.convert import hf
from vlx.convert import mapping as M

# transformers' XCLIPConfig defaults beyond the CLIP ones hf.py applies.
XCLIP_TEXT = dict(hf.CLIP_TEXT, bos_token_id=0, eos_token_id=2)
XCLIP_VISION = dict(hf.CLIP_VISION, mit_hidden_size=512, mit_intermediate_size=2048,
                    mit_num_hidden_layers=1, mit_num_attention_heads=8, num_frames=8)
XCLIP_TOP = dict(projection_dim=512, prompt_layers=2, prompt_alpha=0.1,
                 prompt_hidden_act="quick_gelu", prompt_num_attention_heads=8,
                 logit_scale_init_value=2.6592)


@dataclasses.dataclass
class XClipImport:
  """A converted X-CLIP: the vlx model config, numpy params, facts (image_size, num_frames,
  max_len), the tokenizer spec (absolute paths; None when the directory has none) and the
  frames' preprocessing (vlx.data.image_ops.preprocess's keywords)."""
  model: Dict[str, Any]
  params: Dict[str, Any]
  facts: Dict[str, Any]
  tokenizer: Optional[Dict[str, Any]]
  preprocess: Dict[str, Any] = dataclasses.field(default_factory=dict)


def is_xclip_dir(path: str) -> bool:
  return hf.is_model_type_dir(path, "xclip")


def model_config(cfg: Mapping[str, Any]):
  """HF config dict -> (vlx `xclip` model config, facts)."""
  # pylint: disable=protected-access
  text = hf._with_defaults(cfg.get("text_config"), XCLIP_TEXT, "text_config")
  vision = hf._with_defaults(cfg.get("vision_config"), XCLIP_VISION, "vision_config")
  top = hf._with_defaults({k: cfg[k] for k in XCLIP_TOP if k in cfg}, XCLIP_TOP, "config")
  # pylint: enable=protected-access
  if vision["mit_hidden_size"] != top["projection_dim"]:
    raise M.ConversionError(f"vision_config.mit_hidden_size={vision['mit_hidden_size']} != "
                            f"projection_dim={top['projection_dim']}: X-CLIP's integration "
                            "transformer reads the projected frame embeddings")
  clip = dict(model_type="clip", text_config=text, vision_config=vision,
              projection_dim=top["projection_dim"],
              logit_scale_init_value=top["logit_scale_init_value"])
  model, facts = hf.model_config(clip)
  # HF's XCLIPTextTransformer pools at the largest token id whatever the config's
  # eos_token_id says (it forces the legacy eos_token_id = 2).
  model["text"]["pool"] = "argmax"
  act = lambda name, where: hf._act(name, where)  # noqa: E731  pylint: disable=protected-access
  model.update(
      name="xclip", frozen_image=False,
      adapter=dict(kind="xclip", message_from="cls", message_gate_init=1.0,
                   max_frames=int(vision["num_frames"])),
      temporal=dict(kind="mit", depth=vision["mit_num_hidden_layers"],
                    num_heads=vision["mit_num_attention_heads"],
                    mlp_dim=vision["mit_intermediate_size"], max_frames=vision["num_frames"],
                    act=act(vision["hidden_act"], "vision_config"),
                    ln_eps=float(vision["layer_norm_eps"])),
      prompt=dict(depth=top["prompt_layers"], num_heads=top["prompt_num_attention_heads"],
                  alpha_init=float(top["prompt_alpha"]),
                  act=act(top["prompt_hidden_act"], "prompt_hidden_act"),
                  ln_eps=float(text["layer_norm_eps"]),
                  visual_ln_eps=float(vision["layer_norm_eps"])))
  facts.update(family="xclip", num_frames=int(vision["num_frames"]))
  return model, facts


def _gate(dst: str) -> M.Rule:
  """X-CLIP's message attention is vlx's at gate 1 (no source tensor; nothing to export)."""
  return M.Rule([], [dst], lambda a: [np.ones((), np.float32)], lambda a: [])


def _no_time_table(dst: str, frames: int, width: int) -> M.Rule:
  """vlx's message time table, which X-CLIP lacks: zeros."""
  return M.Rule([], [dst], lambda a: [np.zeros((1, frames, width), np.float32)], lambda a: [])


def rules(model: dict, facts: dict) -> List[M.Rule]:
  """HF state-dict keys <-> flat vlx paths."""
  clip = hf.rules(model, dict(facts, family="clip"))
  for r in clip:
    r.src = [k.replace("pre_layrnorm", "pre_layernorm") for k in r.src]
  img, mit, prompt = model["image"], model["temporal"], model["prompt"]
  r = list(clip)
  for i in range(img["depth"]):
    s, d = f"vision_model.encoder.layers.{i}", f"img/encoder/layer_{i}"
    r += M.linear(f"{s}.message_fc", f"{d}/message_fc")
    r += M.layer_norm(f"{s}.message_ln", f"{d}/message_ln")
    for proj, name in (("q_proj", "query"), ("k_proj", "key"), ("v_proj", "value")):
      r += M.heads_in(f"{s}.message_attn.{proj}", f"{d}/message_attn/{name}", img["num_heads"])
    r += M.heads_out(f"{s}.message_attn.out_proj", f"{d}/message_attn/out", img["num_heads"])
    r.append(_gate(f"{d}/message_gate"))
    r.append(_no_time_table(f"{d}/time_pos_embedding", facts["num_frames"], img["width"]))
  r.append(M.copy("mit.position_embedding", "temporal/time_pos_embedding"))
  r += hf._encoder_rules(  # pylint: disable=protected-access
      "mit.encoder", "temporal/encoder", mit["depth"], mit["num_heads"])
  r += M.layer_norm("prompts_visual_layernorm", "prompts_visual_ln")
  r.append(M.matrix("prompts_visual_projection", "prompts_visual_proj"))
  g = "prompts_generator"
  r += M.layer_norm(f"{g}.layernorm", "prompts/ln_visual")
  for i in range(prompt["depth"]):
    s, d = f"{g}.decoder.{i}", f"prompts/layer_{i}"
    for proj, name in (("q_proj", "query"), ("k_proj", "key"), ("v_proj", "value")):
      r.append(M.heads_in_no_bias(f"{s}.cross_attn.{proj}", f"{d}/cross_attn/{name}",
                                  prompt["num_heads"]))
    r += M.heads_out(f"{s}.cross_attn.proj", f"{d}/cross_attn/out", prompt["num_heads"])
    r += M.layer_norm(f"{s}.norm1", f"{d}/ln_cross")
    r += M.layer_norm(f"{s}.norm3", f"{d}/ln_mlp")
    r += M.linear(f"{s}.mlp.0", f"{d}/mlp/fc1")
    r += M.linear(f"{s}.mlp.3", f"{d}/mlp/fc2")
  r.append(M.copy(f"{g}.alpha", "prompts/alpha"))
  return r


def abstract_params(model: dict, facts: dict) -> M.Flat:
  """Flat '/'-path -> ShapeDtypeStruct of the vlx model's params (no compute)."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from vlx.convert import abstract_params_for  # pylint: disable=g-import-not-at-top
  s = facts["image_size"]
  return abstract_params_for(model, {"video": jnp.zeros((1, facts["num_frames"], s, s, 3)),
                                     "text": jnp.zeros((1, facts["max_len"]), jnp.int32)})


def import_state(cfg: Mapping[str, Any], state: Mapping[str, Any],
                 tokenizer: Optional[Dict[str, Any]] = None,
                 directory: Optional[str] = None) -> XClipImport:
  """HF config dict + state dict (name -> array; torch tensors are converted) -> vlx; the
  frames' preprocessing from `directory`'s preprocessor_config.json (XCLIPProcessor's
  defaults without one, or without a directory)."""
  model, facts = model_config(cfg)
  pp_facts = dict(family="xclip", image_size=facts["image_size"])
  state = {k: M.to_numpy(v) for k, v in state.items()}
  flat = M.import_params(state, rules(model, facts), ignore=hf.is_buffer)
  M.check_against(flat, abstract_params(model, facts))
  return XClipImport(model=model, params=M.unflatten(flat), facts=facts, tokenizer=tokenizer,
                     preprocess=hf.preprocess_config(directory, pp_facts) if directory
                     else hf.default_preprocess(pp_facts))


def import_dir(directory: str) -> XClipImport:
  """A `save_pretrained` directory (config.json + model.safetensors / pytorch_model.bin, the
  CLIP tokenizer's files if it ships them)."""
  directory = os.path.abspath(directory)
  spec = hf.tokenizer_spec(directory, dict(family="clip"))
  if spec:
    spec = dict(spec, dir=directory)
  return import_state(hf.read_config(directory), hf.read_state(directory), spec, directory)


__all__ = ["XClipImport", "is_xclip_dir", "model_config", "rules", "import_state",
           "import_dir"]
