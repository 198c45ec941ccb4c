"""Hugging Face `VivitModel` / `VivitForVideoClassification` and `VideoMAEModel` /
`VideoMAEForVideoClassification` weights -> vlx's joint ViViT tower (+ HF's pooler and
classifier).

  imported = hf_video.import_dir("path/to/hf_dir")        # config.json + model.safetensors
  imported = hf_video.import_state(hf_config_dict, state)   # a state dict as numpy arrays
  out = hf_video.HFVideo(imported.tower, imported.heads).apply(
      {"params": imported.params}, video)      # video [B, T, H, W, 3]: HF's pixel_values
                                               # [B, T, 3, H, W] moved channels-last

`out` holds HF's `last_hidden_state` (ViViT's with its [CLS] row first), `pooled` (what the
classifier reads: ViViT's final [CLS] state, VideoMAE's `fc_norm(mean)`), ViViT's
`pooler_output` (dense + tanh on the [CLS] state) and `logits` where the checkpoint has them.
`imported.tower` is a `build_video_tower("vivit", ...)` config, so the tower's params
(`imported.params["video"]`) drop into any vlx model that holds a ViViT.

What maps where (the checkpoint's own key names, as `save_pretrained` and the Hub write them;
task classes' keys carry a `vivit.` / `videomae.` prefix)
  embeddings.patch_embeddings.projection  Conv3d [D, C, t, p, p] -> video/stem/embedding, rows
                                          flattened (t, p, p, c) as TubeletStem flattens
  ViViT embeddings.cls_token + row 0 of embeddings.position_embeddings -> video/cls
        embeddings.position_embeddings[1:] -> video/spacetime_pos_embedding (posemb
                                          `learn_spacetime`: one row per space-time token)
  VideoMAE (no table: a fixed 1-D sinusoid, posemb `sincos1d_spacetime`)
  encoder.layer.{i}.attention.attention.{query,key,value} -> video/encoder/layer_{i}/attn/...;
        VideoMAE's q_bias / v_bias -> query / value bias, its key has no bias (zeros; so
        has every projection of a `qkv_bias=False` ViViT or `qv_bias=False` VideoMAE)
  encoder.layer.{i}.attention.output.dense -> .../attn/out; intermediate.dense, output.dense
        -> .../mlp/fc1, fc2; layernorm_before, layernorm_after -> .../ln_attn, ln_mlp
  layernorm -> video/encoder/ln_final (VideoMAE with use_mean_pooling has none:
        `encoder_norm=False`, and its classifier's fc_norm -> video/pool_norm)
  pooler.dense (VivitModel) -> pooler; classifier -> classifier

What is left out
  * VideoMAEForPreTraining: its encoder (`videomae.`) imports; the decoder, mask token and
    encoder_to_decoder are not read (vlx's VideoMAE decoder differs: learned positions, a
    projection with bias), as a task class's heads are not.
  * VideoMAEForVideoClassification with use_mean_pooling=False (classifies from the first
    patch token; there is no class token): refused. Non-square frames or patches, a pooler
    activation other than tanh, activations vlx lacks: refused (ConversionError).
  * `interpolate_pos_encoding`: the space-time tables hold the checkpoint's frame count and
    frame size only.
  * Export back to Hugging Face.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, List, Mapping, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vlx.convert import hf
from vlx.convert import mapping as M
from vlx.models import layers
from vlx.models.video import build_video_tower

# transformers' defaults (config.json omits keys left at their default value).
VIVIT = dict(image_size=224, num_frames=32, tubelet_size=[2, 16, 16], num_channels=3,
             hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
             intermediate_size=3072, hidden_act="gelu_fast", layer_norm_eps=1e-6, qkv_bias=True,
             pooler_output_size=None, pooler_act="tanh")
VIDEOMAE = dict(image_size=224, patch_size=16, num_channels=3, num_frames=16, tubelet_size=2,
                hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                intermediate_size=3072, hidden_act="gelu", layer_norm_eps=1e-12, qv_bias=True,
                use_mean_pooling=True)
FC_NORM_EPS = 1e-5  # VideoMAEForVideoClassification's fc_norm: torch's default, not the config's
# model_type -> (defaults, base-model prefix of the task classes' state dicts)
FAMILIES = {"vivit": (VIVIT, "vivit."), "videomae": (VIDEOMAE, "videomae.")}
# Task-class tensors outside the base model that vlx does not import (see the module doc).
NOT_IMPORTED = ("decoder.", "encoder_to_decoder.", "mask_token")


@dataclasses.dataclass
class VideoImport:
  """A converted checkpoint: the tower's config, HF's heads, numpy params, facts."""
  tower: Dict[str, Any]    # build_video_tower fields, "kind" included
  heads: Dict[str, Any]    # pooler (width or None), num_labels (0: no classifier)
  params: Dict[str, Any]   # {"video": ..., "pooler"?: ..., "classifier"?: ...}
  facts: Dict[str, Any]    # family, image_size, num_frames, architecture


class HFVideo(nn.Module):
  """The checkpoint's forward in vlx: the ViViT tower `video`, ViViT's `pooler` (dense + tanh
  on the [CLS] state) and the `classifier` on the pooled vector, where the checkpoint has them.
  Returns the outputs the module doc lists."""
  tower: Any
  heads: Any
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, video, frame_mask=None):
    fields = dict(self.tower)
    kind = fields.pop("kind")
    pooled, tokens = build_video_tower(kind, **fields, dtype=self.dtype, name="video")(
        video, frame_mask)
    out = {"pooled": pooled, "last_hidden_state": tokens}
    if fields.get("pool") == "cls":  # HF's sequence keeps the [CLS] state in front
      out["last_hidden_state"] = jnp.concatenate([pooled[:, None], tokens], axis=1)
    heads = dict(self.heads)
    if heads.get("pooler"):
      out["pooler_output"] = jnp.tanh(layers.dense(
          heads["pooler"], "embed", "mlp", self.dtype, jnp.float32, name="pooler")(pooled))
    if heads.get("num_labels"):
      out["logits"] = layers.dense(heads["num_labels"], "embed", "classes", self.dtype,
                                   jnp.float32, name="classifier")(pooled)
    return out


def _square(value, where: str) -> int:
  if isinstance(value, (list, tuple)):
    if len(set(value)) != 1:
      raise M.ConversionError(f"{where}={list(value)}: only square frames and patches are "
                              "supported")
    value = value[0]
  return int(value)


def _architecture(cfg: Mapping[str, Any], state_keys) -> str:
  """The class the checkpoint was saved from: its config's `architectures`, else its keys."""
  names = cfg.get("architectures") or []
  if names:
    return names[0]
  family = cfg["model_type"]
  base = "VivitModel" if family == "vivit" else "VideoMAEModel"
  if any(k.startswith("classifier.") for k in state_keys):
    return base.replace("Model", "ForVideoClassification")
  if any(k.startswith("decoder.") for k in state_keys):
    return "VideoMAEForPreTraining"
  return base


def model_config(cfg: Mapping[str, Any], state_keys=()) -> Tuple[dict, dict, dict]:
  """HF config dict (config.json or `PretrainedConfig.to_dict()`) -> (tower fields, heads,
  facts)."""
  family = cfg.get("model_type")
  if family not in FAMILIES:
    raise M.ConversionError(f"model_type {family!r}: vlx imports video checkpoints of "
                            f"{sorted(FAMILIES)}")
  c = dict(FAMILIES[family][0])
  c.update({k: v for k, v in cfg.items() if v is not None or k not in c})
  arch = _architecture(cfg, state_keys)
  classify = arch.endswith("ForVideoClassification")
  width, heads_n = int(c["hidden_size"]), int(c["num_attention_heads"])
  if width % heads_n:
    raise M.ConversionError(f"hidden_size {width} is not divisible by num_attention_heads "
                            f"{heads_n}")
  if int(c["num_channels"]) != 3:
    raise M.ConversionError(f"num_channels={c['num_channels']}: vlx videos are RGB")
  image_size = _square(c["image_size"], "image_size")
  if family == "vivit":
    t, ph, pw = c["tubelet_size"]
    tubelet, patch = int(t), _square([ph, pw], "tubelet_size[1:]")
    tower = dict(pool="cls", posemb="learn_spacetime")
    if c["pooler_act"] != "tanh":
      raise M.ConversionError(f"pooler_act={c['pooler_act']!r}: vlx's ViViT pooler is tanh")
    # VivitModel(add_pooling_layer=False) saves no pooler: go by the keys where there are any.
    has_pooler = (any(k.endswith("pooler.dense.weight") for k in state_keys) if state_keys
                  else not classify)
    heads = dict(pooler=int(c["pooler_output_size"] or width) if has_pooler else None)
  else:
    tubelet, patch = int(c["tubelet_size"]), _square(c["patch_size"], "patch_size")
    mean = bool(c["use_mean_pooling"])
    if classify and not mean:
      raise M.ConversionError("VideoMAEForVideoClassification with use_mean_pooling=False "
                              "classifies from the first patch token (no class token); not "
                              "supported")
    tower = dict(pool="gap", posemb="sincos1d_spacetime", encoder_norm=not mean,
                 pool_norm=classify, pool_norm_eps=FC_NORM_EPS)
    heads = dict(pooler=None)
  labels = len(c["id2label"]) if c.get("id2label") is not None else c.get("num_labels", 2)
  heads["num_labels"] = int(labels) if classify else 0  # 0: HF's classifier is an Identity
  tower = dict(kind="vivit", encoder="joint", patch_size=patch, tubelet=tubelet,
               num_frames=int(c["num_frames"]), width=width, depth=int(c["num_hidden_layers"]),
               num_heads=heads_n, mlp_dim=int(c["intermediate_size"]), pre_norm=False,
               stem_bias=True, ln_eps=float(c["layer_norm_eps"]),
               act=hf._act(c["hidden_act"], "config"),  # pylint: disable=protected-access
               scan=False, remat="none", **tower)
  bias = c["qkv_bias"] if family == "vivit" else c["qv_bias"]
  facts = dict(family=family, image_size=image_size, num_frames=int(c["num_frames"]),
               architecture=arch, qkv_bias=bool(bias))
  return tower, heads, facts


# ---- Rules ---------------------------------------------------------------------------------


def _tubelet_conv(src: str, dst: str, tubelet: int, patch: int) -> List[M.Rule]:
  """Conv3d [D, C, t, p, p] <-> TubeletStem kernel [(t*p*p*C), D] (rows (t, p, p, c))."""
  return [M.Rule([f"{src}.weight"], [f"{dst}/kernel"],
                 lambda a: [a[0].transpose(2, 3, 4, 1, 0).reshape(-1, a[0].shape[0])],
                 lambda a: [a[0].reshape(tubelet, patch, patch, -1, a[0].shape[-1])
                            .transpose(4, 3, 0, 1, 2)]),
          M.copy(f"{src}.bias", f"{dst}/bias")]


def _attention(src: str, dst: str, heads: int, family: str, bias: bool) -> List[M.Rule]:
  rules = []
  for name in ("query", "key", "value"):
    s, d = f"{src}.{name}", f"{dst}/{name}"
    if not bias or (family == "videomae" and name == "key"):
      rules.append(M.heads_in_no_bias(s, d, heads))
    elif family == "videomae":  # VideoMAE's q_bias / v_bias parameters
      rules += M.heads_in(s, d, heads)[:1]
      rules.append(M.Rule([f"{src}.{name[0]}_bias"], [f"{d}/bias"],
                          lambda a: [a[0].reshape(heads, -1)], lambda a: [a[0].reshape(-1)]))
    else:
      rules += M.heads_in(s, d, heads)
  return rules


def rules(tower: dict, heads: dict, facts: dict) -> List[M.Rule]:
  """HF state-dict keys (base model, no prefix; heads unprefixed) <-> flat vlx paths."""
  family, v, h = facts["family"], "video", tower["num_heads"]
  e = "embeddings"
  r = _tubelet_conv(f"{e}.patch_embeddings.projection", f"{v}/stem/embedding", tower["tubelet"],
                    tower["patch_size"])
  for i in range(tower["depth"]):
    s, d = f"encoder.layer.{i}", f"{v}/encoder/layer_{i}"
    r += _attention(f"{s}.attention.attention", f"{d}/attn", h, family, facts["qkv_bias"])
    r += M.heads_out(f"{s}.attention.output.dense", f"{d}/attn/out", h)
    r += M.linear(f"{s}.intermediate.dense", f"{d}/mlp/fc1")
    r += M.linear(f"{s}.output.dense", f"{d}/mlp/fc2")
    r += M.layer_norm(f"{s}.layernorm_before", f"{d}/ln_attn")
    r += M.layer_norm(f"{s}.layernorm_after", f"{d}/ln_mlp")
  if tower.get("encoder_norm", True):
    r += M.layer_norm("layernorm", f"{v}/encoder/ln_final")
  if family == "vivit":
    # HF gives the [CLS] token a position; vlx folds that position into the token.
    r.append(M.class_token(f"{e}.cls_token", f"{e}.position_embeddings", f"{v}/cls",
                           f"{v}/spacetime_pos_embedding", batched=True))
  if tower.get("pool_norm"):
    r += M.layer_norm("fc_norm", f"{v}/pool_norm")
  if heads.get("pooler"):
    r += M.linear("pooler.dense", "pooler")
  if heads.get("num_labels"):
    r += M.linear("classifier", "classifier")
  return r


def base_state(state: Mapping[str, Any], family: str) -> Dict[str, Any]:
  """The base model's tensors without the task classes' prefix; the classification heads
  (`classifier.*`, `fc_norm.*`) keep their names, the pre-training decoder is dropped."""
  prefix = FAMILIES[family][1]
  if not any(k.startswith(prefix) for k in state):
    return dict(state)
  return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state.items()
          if k.startswith(prefix) or not k.startswith(NOT_IMPORTED)}


def abstract_params(tower: dict, heads: dict, facts: dict) -> M.Flat:
  """Flat '/'-path -> ShapeDtypeStruct of HFVideo's params (no compute)."""
  from vlx.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  s = facts["image_size"]
  video = jnp.zeros((1, facts["num_frames"], s, s, 3))
  variables = jax.eval_shape(lambda: HFVideo(tower, heads).init(jax.random.key(0), video))
  return M.flatten(mesh_lib.unbox(variables["params"]))


def _check_shapes(state: Mapping[str, np.ndarray], rule_list: List[M.Rule],
                  abstract: M.Flat) -> None:
  """Every checkpoint tensor has the shape the config implies (the model's parameter shapes
  taken back through each rule's inverse), or a ConversionError names the tensors; run
  before the rules, whose reshapes would otherwise fail without naming them. One rule at a
  time, so memory stays one layer's."""
  wrong = []
  for r in rule_list:
    if not all(p in abstract for p in r.dst) or not all(k in state for k in r.src):
      continue  # import_params / check_against name what is missing
    expected = r.bwd([np.zeros(abstract[p].shape, np.float32) for p in r.dst])
    wrong += [f"{k} {tuple(np.shape(state[k]))} (the config gives {tuple(e.shape)})"
              for k, e in zip(r.src, expected) if tuple(np.shape(state[k])) != tuple(e.shape)]
  if wrong:
    raise M.ConversionError(f"{len(wrong)} checkpoint tensor(s) of another shape than the "
                            "config.json describes: " + ", ".join(wrong[:20]))


def import_state(cfg: Mapping[str, Any], state: Mapping[str, Any]) -> VideoImport:
  """HF config dict + state dict (name -> array; torch tensors are converted) -> vlx."""
  tower, heads, facts = model_config(cfg, tuple(state))
  state = {k: M.to_numpy(v) for k, v in base_state(state, facts["family"]).items()}
  rule_list, abstract = rules(tower, heads, facts), abstract_params(tower, heads, facts)
  _check_shapes(state, rule_list, abstract)
  flat = M.import_params(state, rule_list, ignore=hf.is_buffer)
  M.check_against(flat, abstract)
  return VideoImport(tower=tower, heads=heads, params=M.unflatten(flat), facts=facts)


def import_dir(directory: str) -> VideoImport:
  """A `save_pretrained` directory (config.json + model.safetensors / pytorch_model.bin)."""
  return import_state(hf.read_config(directory), hf.read_state(directory))


def is_video_dir(path: str) -> bool:
  """A Hugging Face directory of a model type this module imports."""
  if not os.path.isdir(path) or not os.path.isfile(os.path.join(path, "config.json")):
    return False
  return hf.read_config(path).get("model_type") in FAMILIES


__all__ = ["VideoImport", "HFVideo", "model_config", "rules", "import_state", "import_dir",
           "is_video_dir", "FAMILIES"]
