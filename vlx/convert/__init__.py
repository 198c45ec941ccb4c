"""Import CLIP/SigLIP checkpoints from the PyTorch ecosystem into vlx, and export them back.

  imported = convert.import_checkpoint("path/to/hf_or_open_clip")   # config + numpy params
  convert.save(imported, "out_dir")       # orbax checkpoint `--config.init_from=out_dir` takes
  convert.export_hf(model_cfg, params, image_size, "hf_dir")   # config.json + model.safetensors

The command line front end is `python -m vlx.convert` (see `vlx/convert/__main__.py`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from typing import Any, Dict, Optional

import numpy as np

from vlx.convert import hf, mapping
from vlx.convert import open_clip as oc
from vlx.convert import tensors
from vlx.convert.mapping import ConversionError

PRETRAINED_JSON = "vlx_pretrained.json"
# A Hugging Face CLIP tokenizer's files (whichever exist are carried along).
HF_TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json",
                      "special_tokens_map.json")
__all__ = ["ConversionError", "Imported", "detect", "import_checkpoint", "save", "read_meta",
           "export_hf", "abstract_params"]


@dataclasses.dataclass
class Imported:
  """A converted checkpoint: vlx model config, numpy params and how to feed the model."""
  model: Dict[str, Any]
  params: Dict[str, Any]
  image_size: int
  max_len: int
  preprocess: Dict[str, Any]
  tokenizer: Optional[Dict[str, Any]]  # tokenizer spec with absolute paths (None: ships none)
  family: str                          # clip | siglip | open_clip


def detect(path: str) -> str:
  """'vlx' (converted dir or workdir), 'hf' or 'open_clip', from what the path holds."""
  if os.path.isdir(path):
    if os.path.exists(os.path.join(path, PRETRAINED_JSON)):
      return "vlx"
    if os.path.exists(os.path.join(path, "open_clip_config.json")):
      return "open_clip"
    if os.path.exists(os.path.join(path, "config.json")):
      with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
      if "model_type" in cfg:
        return "hf"
      if "model" in cfg and "data" in cfg:
        return "vlx"
    raise FileNotFoundError(f"{path}: not a Hugging Face model directory (config.json), an "
                            f"open_clip directory (open_clip_config.json) or a vlx directory")
  if os.path.isfile(path):
    return "open_clip"
  raise FileNotFoundError(path)


def abstract_params(model_cfg: Dict[str, Any], image_size: int, max_len: int) -> Dict[str, Any]:
  """Flat '/'-path -> ShapeDtypeStruct of the vlx two-tower model's parameters (no compute)."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  return abstract_params_for(model_cfg, {"image": jnp.zeros((1, image_size, image_size, 3)),
                                         "text": jnp.zeros((1, max_len), jnp.int32)})


def abstract_params_for(model_cfg: Dict[str, Any], batch) -> Dict[str, Any]:
  """Flat '/'-path -> ShapeDtypeStruct of the params of the registered model `model_cfg`
  names, initialised (in shape only) on `batch`."""
  import jax  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  from vlx.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  from vlx import build  # pylint: disable=g-import-not-at-top
  model = build.build_model(ml_collections.ConfigDict({"model": model_cfg}))
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), batch, train=False))
  return mapping.flatten(mesh_lib.unbox(variables["params"]))


def _finish(model, state, rule_list, is_buffer, facts, preprocess, tokenizer) -> Imported:
  flat = mapping.import_params(state, rule_list, ignore=is_buffer)
  mapping.check_against(flat, abstract_params(model, facts["image_size"], facts["max_len"]))
  return Imported(model=model, params=mapping.unflatten(flat), image_size=facts["image_size"],
                  max_len=facts["max_len"], preprocess=preprocess, tokenizer=tokenizer,
                  family=facts["family"])


def import_hf(directory: str) -> Imported:
  directory = os.path.abspath(directory)
  model, facts = hf.model_config(hf.read_config(directory))
  spec = hf.tokenizer_spec(directory, facts)
  if spec:
    spec = {k: (os.path.normpath(os.path.join(directory, v)) if k in ("dir", "path") else v)
            for k, v in spec.items()}
  return _finish(model, hf.read_state(directory), hf.rules(model, facts), hf.is_buffer, facts,
                 hf.preprocess_config(directory, facts), spec)


def import_open_clip(path: str, model_config: Optional[str] = None) -> Imported:
  weights, cfg, pp = oc.locate(os.path.abspath(path), model_config)
  model, facts = oc.model_config(cfg)
  spec = dict(type="clip_bpe", normalization="open_clip")
  return _finish(model, tensors.read(weights), oc.rules(model, facts), oc.is_buffer, facts,
                 oc.preprocess_config(pp, facts), spec)


def import_checkpoint(path: str, model_config: Optional[str] = None):
  """An `Imported` dual encoder, or for a HF ViViT / VideoMAE directory a
  `hf_video.VideoImport` (a video tower, vlx/convert/hf_video.py), for a HF X-CLIP directory
  a `hf_xclip.XClipImport` (vlx/convert/hf_xclip.py), for a HF PaliGemma a
  `hf_paligemma.PaliGemmaImport`."""
  kind = detect(path)
  if kind == "hf":
    from vlx.convert import hf_paligemma, hf_video, hf_xclip  # pylint: disable=g-import-not-at-top
    if hf_paligemma.is_paligemma_dir(path):
      return hf_paligemma.import_dir(path)
    if hf_video.is_video_dir(path):
      return hf_video.import_dir(path)
    if hf_xclip.is_xclip_dir(path):
      return hf_xclip.import_dir(path)
    return import_hf(path)
  if kind == "open_clip":
    return import_open_clip(path, model_config)
  raise ValueError(f"{path} is already a vlx directory; load it with vlx.pretrained.load")


def _relocate_tokenizer(spec: Optional[Dict[str, Any]], out_dir: str) -> Optional[Dict[str, Any]]:
  """Copies the tokenizer's files into `out_dir`; returns the spec with relative paths."""
  if not spec:
    return spec
  spec = dict(spec)
  tok_dir = os.path.join(out_dir, "tokenizer")
  os.makedirs(tok_dir, exist_ok=True)
  if spec.get("dir"):
    for name in HF_TOKENIZER_FILES:
      src = os.path.join(spec["dir"], name)
      if os.path.exists(src):
        shutil.copy(src, tok_dir)
    spec["dir"] = "tokenizer"
  if spec.get("path"):
    shutil.copy(spec["path"], tok_dir)
    spec["path"] = os.path.join("tokenizer", os.path.basename(spec["path"]))
  if spec["type"] == "clip_bpe" and not spec.get("dir"):
    from vlx.data import clip_bpe  # pylint: disable=g-import-not-at-top
    bpe = spec.get("bpe") or clip_bpe.find_open_clip_bpe()
    if bpe:  # keep the vocabulary with the weights: the output must not depend on open_clip
      shutil.copy(bpe, tok_dir)
      spec["bpe"] = os.path.join("tokenizer", os.path.basename(bpe))
  return spec


def save(imported, out_dir: str) -> str:
  """Writes `vlx_pretrained.json`, the tokenizer files and an orbax checkpoint (step 0) of an
  `Imported` dual encoder or a PaliGemma (`hf_paligemma.PaliGemmaImport`: family
  "paligemma", its facts kept, `max_len` None)."""
  from vlx.convert import hf_paligemma  # pylint: disable=g-import-not-at-top
  if not isinstance(imported, (Imported, hf_paligemma.PaliGemmaImport)):
    raise ConversionError(f"a {type(imported).__name__} (a video tower or an X-CLIP) is not "
                          "written as a vlx directory yet; use the Hugging Face directory itself "
                          "(vlx.pretrained.load(HF_DIR))")
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  out_dir = os.path.abspath(out_dir)
  if os.path.exists(os.path.join(out_dir, "checkpoints")) or os.path.exists(
      os.path.join(out_dir, PRETRAINED_JSON)):
    raise FileExistsError(f"{out_dir} already holds a converted checkpoint; choose a new --out "
                          "or delete it")
  os.makedirs(out_dir, exist_ok=True)
  if isinstance(imported, Imported):
    meta = dict(model=imported.model, image_size=imported.image_size, max_len=imported.max_len,
                family=imported.family)
  else:
    meta = dict(model=imported.model, image_size=imported.facts["image_size"], max_len=None,
                family="paligemma", facts=dict(imported.facts))
  meta.update(preprocess=dict(imported.preprocess),
              tokenizer=_relocate_tokenizer(imported.tokenizer, out_dir))
  manager = ocp.CheckpointManager(os.path.join(out_dir, "checkpoints"),
                                  options=ocp.CheckpointManagerOptions(create=True))
  manager.save(0, args=ocp.args.Composite(state=ocp.args.StandardSave(
      {"params": imported.params})), force=True)
  manager.wait_until_finished()
  manager.close()
  with open(os.path.join(out_dir, PRETRAINED_JSON), "w", encoding="utf-8") as f:
    json.dump(meta, f, indent=2)
  return out_dir


def read_meta(directory: str) -> Dict[str, Any]:
  """A converted directory's metadata, tokenizer paths made absolute."""
  with open(os.path.join(directory, PRETRAINED_JSON), encoding="utf-8") as f:
    meta = json.load(f)
  spec = meta.get("tokenizer")
  if spec:
    for key in ("dir", "path", "bpe"):
      if spec.get(key):
        spec[key] = os.path.normpath(os.path.join(os.path.abspath(directory), spec[key]))
  return meta


def export_hf(model_cfg: Dict[str, Any], params, image_size: int, out_dir: str,
              tokenizer: Optional[Dict[str, Any]] = None,
              preprocess: Optional[Dict[str, Any]] = None) -> str:
  """A vlx two_tower with the CLIP or SigLIP layout -> `config.json` + `model.safetensors`
  that `CLIPModel/SiglipModel.from_pretrained` loads, `preprocessor_config.json` (the image
  preprocessing `preprocess` describes, so `AutoProcessor` prepares images as vlx does) and
  the tokenizer files, if any. Other models raise one line naming what HF cannot express."""
  cfg = hf.hf_config(dict(model_cfg), image_size)
  model, facts = hf.model_config(cfg)
  flat = {k: np.asarray(v, np.float32) for k, v in mapping.flatten(_to_numpy(params)).items()}
  mapping.check_against(flat, abstract_params(model, image_size, facts["max_len"]))
  state = mapping.export_params(flat, hf.rules(model, facts))
  os.makedirs(out_dir, exist_ok=True)
  tensors.write(os.path.join(out_dir, "model.safetensors"), state)
  with open(os.path.join(out_dir, "config.json"), "w", encoding="utf-8") as f:
    json.dump(cfg, f, indent=2)
  pp = preprocess or hf.default_preprocess(facts)
  with open(os.path.join(out_dir, "preprocessor_config.json"), "w", encoding="utf-8") as f:
    json.dump(hf.preprocessor_config(pp), f, indent=2)
  if tokenizer and tokenizer.get("dir"):
    for name in HF_TOKENIZER_FILES:
      src = os.path.join(tokenizer["dir"], name)
      if os.path.exists(src):
        shutil.copy(src, out_dir)
  elif tokenizer and tokenizer.get("type") == "siglip":
    shutil.copy(tokenizer["path"], os.path.join(out_dir, "spiece.model"))
  elif tokenizer and tokenizer.get("type") == "clip_bpe" and tokenizer.get("bpe"):
    _write_hf_clip_vocab(tokenizer["bpe"], out_dir)
  return out_dir


def _write_hf_clip_vocab(bpe: str, out_dir: str) -> None:
  """open_clip's BPE file as the vocab.json + merges.txt that HF's CLIPTokenizer reads."""
  from vlx.data import clip_bpe  # pylint: disable=g-import-not-at-top
  vocab, merges = clip_bpe.open_clip_vocab(bpe)
  with open(os.path.join(out_dir, "vocab.json"), "w", encoding="utf-8") as f:
    json.dump(vocab, f)
  with open(os.path.join(out_dir, "merges.txt"), "w", encoding="utf-8") as f:
    f.write("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")


def _to_numpy(tree):
  import jax  # pylint: disable=g-import-not-at-top
  return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), tree)
