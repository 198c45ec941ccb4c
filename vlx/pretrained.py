"""Use a pretrained dual encoder in three lines:

  model = vlx.pretrained.load("path")   # HF CLIP/SigLIP dir, open_clip dir/file, vlx dir
  probs = model.zero_shot(images, ["cat", "dog"])
  emb = model.encode_image(images)        # PIL / uint8, one or a batch: preprocessed here

`load` converts PyTorch-ecosystem checkpoints on the fly (`vlx.convert`), reads converted
directories (`python -m vlx.convert`) and trained vlx workdirs alike. A Hugging Face ViViT or
VideoMAE directory loads as a `PretrainedVideo` (`encode_video`, `classify`), an X-CLIP one
as a `PretrainedXClip` (`encode_video`, `encode_text`, `tokenize`, `video_text_logits`), a
PaliGemma one as a `PretrainedPaliGemma` (`generate(images, prompts)`, `generate_ids`).
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

DEFAULT_TEMPLATES = ("a photo of a {}.",)


class Pretrained:
  """A dual encoder with its tokenizer and image preprocessing (see the module doc)."""

  def __init__(self, model, params, tokenizer, preprocess_cfg: Dict[str, Any], image_size: int,
               max_len: int, family: str = "vlx", model_config: Optional[Dict] = None):
    import jax  # pylint: disable=g-import-not-at-top
    self.model, self.params, self.tokenizer = model, params, tokenizer
    self.preprocess_cfg = dict(preprocess_cfg)
    self.image_size, self.max_len, self.family = image_size, max_len, family
    self.model_config = model_config
    self._encode_image = jax.jit(lambda p, x: model.apply({"params": p}, x,
                                                          method=model.encode_image))
    self._encode_text = jax.jit(lambda p, t: model.apply({"params": p}, t,
                                                         method=model.encode_text))

  # ---- Inputs ----------------------------------------------------------------------------
  def preprocess(self, images) -> np.ndarray:
    """Images -> float32 [B, H, W, 3] as the checkpoint expects (resize, crop, normalize).

    Takes a PIL image, a uint8 array ([H, W] grayscale, [H, W, C] with C in 1, 3, 4, or a
    batch [B, H, W, C]), an image file's path or a list of those."""
    from vlx.data import image_ops  # pylint: disable=g-import-not-at-top
    out = [image_ops.preprocess(im, **self.preprocess_cfg) for im in _image_list(images)]
    if not out:
      return np.zeros((0, self.image_size, self.image_size, 3), np.float32)
    return np.stack(out)

  def _pixels(self, images) -> np.ndarray:
    """Model-ready pixels: float arrays are taken as `preprocess` output already (checked for
    size); anything else (uint8, PIL) is preprocessed, never fed to the model raw."""
    if isinstance(images, np.ndarray) and np.issubdtype(images.dtype, np.floating):
      x = images[None] if images.ndim == 3 else images
      if x.ndim != 4 or x.shape[1:] != (self.image_size, self.image_size, 3):
        raise ValueError(
            f"float pixels must be preprocessed [B, {self.image_size}, {self.image_size}, 3] "
            f"(the output of .preprocess), got {images.shape}; pass uint8 or PIL images to "
            f"have them preprocessed")
      return x.astype(np.float32)
    return self.preprocess(images)

  def tokenize(self, texts: Sequence[str]) -> np.ndarray:
    """Strings -> int32 [B, max_len], as the checkpoint's own tokenizer would give them."""
    if isinstance(texts, str):
      texts = [texts]
    return self.tokenizer.encode(list(texts), self.max_len)

  # ---- Embeddings ------------------------------------------------------------------------
  def encode_image(self, images, batch_size: int = 64) -> np.ndarray:
    """Images -> L2-normalized embeddings [B, D]. uint8 arrays and PIL images are
    preprocessed here; float arrays are taken as `preprocess` output."""
    return self._batched(self._encode_image, self._pixels(images), batch_size)

  def encode_text(self, token_ids, batch_size: int = 256) -> np.ndarray:
    """Token ids [B, L] -> L2-normalized embeddings [B, D]."""
    return self._batched(self._encode_text, np.asarray(token_ids, np.int32), batch_size)

  def _batched(self, fn, x, batch_size):
    if not len(x):  # still [0, D]: the width comes from tracing one example's shape
      import jax  # pylint: disable=g-import-not-at-top
      d = jax.eval_shape(fn, self.params, jax.ShapeDtypeStruct((1,) + x.shape[1:], x.dtype))
      return np.zeros((0,) + d.shape[1:], np.float32)
    outs = [np.asarray(fn(self.params, x[i:i + batch_size])) for i in range(0, len(x), batch_size)]
    return np.concatenate(outs)

  @property
  def logit_scale(self) -> float:
    """The multiplier on cosine similarities (exp of the learned log-scale)."""
    return float(np.exp(np.asarray(self.params["logit_scale"])))

  @property
  def logit_bias(self) -> Optional[float]:
    """SigLIP's learned bias (None for softmax-trained models)."""
    b = self.params.get("logit_bias")
    return None if b is None else float(np.asarray(b))

  # ---- Tasks -----------------------------------------------------------------------------
  def class_embeddings(self, class_names: Sequence[str],
                       templates: Sequence[str] = DEFAULT_TEMPLATES) -> np.ndarray:
    """Prompt ensemble (Radford et al.): mean of normalized template embeddings, renormalized."""
    if not class_names or not templates:
      raise ValueError("zero-shot needs at least one class name and one template")
    texts = [t.format(c) for c in class_names for t in templates]
    emb = self.encode_text(self.tokenize(texts)).reshape(len(class_names), len(templates), -1)
    emb = emb.mean(1)
    return emb / np.linalg.norm(emb, axis=-1, keepdims=True)

  def zero_shot(self, images, class_names: Sequence[str],
                templates: Sequence[str] = DEFAULT_TEMPLATES) -> np.ndarray:
    """Images -> class probabilities [B, C]: a softmax for contrastive (CLIP) models, per-class
    sigmoids for SigLIP. Images as `encode_image` takes them (one or many, PIL or uint8, or
    float `preprocess` output)."""
    pixels = self._pixels(images)
    classes = self.class_embeddings(class_names, templates)
    logits = self.logit_scale * self.encode_image(pixels) @ classes.T
    if self.logit_bias is not None:
      return 1.0 / (1.0 + np.exp(-(logits + self.logit_bias)))
    logits = logits - logits.max(-1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(-1, keepdims=True)


class PretrainedVideo:
  """An imported video tower (HF ViViT / VideoMAE; vlx/convert/hf_video.py) with the heads
  its checkpoint has. Videos are float `[B, T, H, W, 3]`, already preprocessed as the
  checkpoint expects (HF's `pixel_values` `[B, T, 3, H, W]` moved channels-last)."""

  def __init__(self, imported):
    import jax  # pylint: disable=g-import-not-at-top
    from vlx.convert import hf_video  # pylint: disable=g-import-not-at-top
    self.imported, self.family = imported, imported.facts["family"]
    self.params = jax.tree.map(np.asarray, imported.params)
    model = hf_video.HFVideo(imported.tower, imported.heads)
    self._forward = jax.jit(lambda p, v: model.apply({"params": p}, v))
    s, t = imported.facts["image_size"], imported.facts["num_frames"]
    self.video_shape = (t, s, s, 3)

  def _outputs(self, video) -> Dict[str, np.ndarray]:
    x = np.asarray(video, np.float32)
    if x.ndim != 5 or x.shape[1:] != self.video_shape:
      raise ValueError(f"videos must be float [B, {', '.join(map(str, self.video_shape))}] "
                       f"(channels last), got shape {np.shape(video)}")
    return {k: np.asarray(v) for k, v in self._forward(self.params, x).items()}

  def encode_video(self, video) -> np.ndarray:
    """`[B, D]`: the vector the checkpoint's classifier reads (ViViT's final [CLS] state,
    VideoMAE's mean over tokens, after `fc_norm` when it has one); not normalised."""
    return self._outputs(video)["pooled"]

  def classify(self, video) -> np.ndarray:
    """`[B, num_labels]` logits of a `...ForVideoClassification` checkpoint."""
    if not self.imported.heads.get("num_labels"):
      raise ValueError(f"this {self.imported.facts['architecture']} checkpoint has no "
                       "classifier")
    return self._outputs(video)["logits"]


class PretrainedXClip:
  """An imported X-CLIP (HF `XCLIPModel`; vlx/convert/hf_xclip.py). Videos are float
  `[B, T, H, W, 3]`, preprocessed as the checkpoint expects (HF's `pixel_values`
  `[B, T, 3, H, W]` moved channels-last; `preprocess` makes them from uint8 or PIL frames,
  and the methods call it on anything not float). Its text embedding depends on the video
  it is compared with (video-specific prompts), so scores come from `video_text_logits`."""

  def __init__(self, imported):
    import jax  # pylint: disable=g-import-not-at-top
    import ml_collections  # pylint: disable=g-import-not-at-top
    from vlx import build  # pylint: disable=g-import-not-at-top
    from vlx.data.tokenizer import load_tokenizer  # pylint: disable=g-import-not-at-top
    self.imported, self.family = imported, "xclip"
    self.params = jax.tree.map(np.asarray, imported.params)
    self.model = model = build.build_model(ml_collections.ConfigDict({"model": imported.model}))
    self.tokenizer = (load_tokenizer(imported.tokenizer) if imported.tokenizer
                      else MissingTokenizer("this X-CLIP directory"))
    self.max_len = imported.facts["max_len"]
    s = imported.facts["image_size"]
    self.frame_shape = (s, s, 3)
    apply = lambda method: jax.jit(  # noqa: E731
        lambda p, *a: model.apply({"params": p}, *a, method=method))
    self._video = apply("video_features")
    self._text = apply("text_features")
    self._similarity = apply("video_text_similarity")

  def preprocess(self, videos) -> np.ndarray:
    """Clips of frames -> float32 `[B, T, S, S, 3]` as XCLIPProcessor makes them (each frame
    resized, centre-cropped and normalised as the directory's preprocessor_config.json says).
    Takes a uint8 clip `[T, H, W, C]`, a batch `[B, T, H, W, C]`, or a list of clips, each a
    uint8 array or a list of frames (PIL images or uint8 arrays)."""
    from vlx.data import image_ops  # pylint: disable=g-import-not-at-top
    if isinstance(videos, np.ndarray):
      if videos.ndim not in (4, 5):
        raise ValueError(f"expected a clip [T, H, W, C] or a batch [B, T, H, W, C] of uint8 "
                         f"frames, got an array of shape {videos.shape}")
      clips = [videos] if videos.ndim == 4 else list(videos)
    elif isinstance(videos, (list, tuple)):
      clips = list(videos)
    else:
      raise TypeError(f"expected uint8 frames (an array, or a list of clips), got "
                      f"{type(videos).__name__}")
    out = [np.stack([image_ops.preprocess(frame, **self.imported.preprocess)
                     for frame in _image_list(clip)]) for clip in clips]
    if len({x.shape for x in out}) > 1:
      raise ValueError(f"clips of different lengths: {[len(x) for x in out]} frames")
    return np.stack(out) if out else np.zeros((0, 0) + self.frame_shape, np.float32)

  def _pixels(self, video) -> np.ndarray:
    """Model-ready pixels: float arrays are taken as `preprocess` output (checked for size);
    anything else (uint8, PIL) is preprocessed, never fed to the model raw."""
    if isinstance(video, (list, tuple)):
      return self.preprocess(video)
    video = np.asarray(video)  # a jax or torch array too
    if not np.issubdtype(video.dtype, np.floating):
      return self.preprocess(video)
    x = video.astype(np.float32)
    if x.ndim != 5 or x.shape[2:] != self.frame_shape:
      raise ValueError(f"videos must be float [B, T, {', '.join(map(str, self.frame_shape))}] "
                       f"(preprocessed, channels last), got shape {np.shape(video)}")
    return x

  def tokenize(self, texts: Sequence[str]) -> np.ndarray:
    """Strings -> int32 [B, max_len] with the checkpoint's CLIP tokenizer."""
    return self.tokenizer.encode([texts] if isinstance(texts, str) else list(texts),
                                 self.max_len)

  def encode_video(self, video) -> np.ndarray:
    """`[B, E]`: the integration transformer's mean over frames, L2-normalised (HF's
    `get_video_features`, normalised)."""
    return np.asarray(self._video(self.params, self._pixels(video))[0])

  def encode_text(self, token_ids) -> np.ndarray:
    """`[B, E]`: projected text embeddings before any video's prompt (HF's
    `get_text_features`; not normalised)."""
    return np.asarray(self._text(self.params, np.asarray(token_ids, np.int32)))

  @property
  def logit_scale(self) -> float:
    return float(np.exp(np.asarray(self.params["logit_scale"])))

  def video_text_logits(self, video, token_ids) -> np.ndarray:
    """`[B_video, B_text]`: each text prompted by each video, scaled cosines (HF's
    `logits_per_video`)."""
    video_emb, context = self._video(self.params, self._pixels(video))
    texts = self._text(self.params, np.asarray(token_ids, np.int32))
    return self.logit_scale * np.asarray(self._similarity(self.params, video_emb, context,
                                                          texts))


class PretrainedPaliGemma:
  """An imported PaliGemma (HF `PaliGemmaForConditionalGeneration`;
  vlx/convert/hf_paligemma.py): greedy answers to a text prompt about an image ("caption en",
  "detect cat", ...), from vlx's prefix-LM generator (vlx/families/unified/generate.py).
  `generate` builds the prompt as PaliGemma's processor does (the image tokens, then
  `<bos> + prompt + "\\n"`, all of it the bidirectional prefix) with the directory's
  `tokenizer.model`; `generate_ids` takes pixels and prompt ids already prepared."""

  preprocess = Pretrained.preprocess   # the same image handling as the dual encoders'
  _pixels = Pretrained._pixels

  def __init__(self, imported):
    import jax  # pylint: disable=g-import-not-at-top
    import ml_collections  # pylint: disable=g-import-not-at-top
    from vlx import build  # pylint: disable=g-import-not-at-top
    from vlx.convert import hf_paligemma  # pylint: disable=g-import-not-at-top
    self.imported, self.family = imported, "paligemma"
    facts = imported.facts
    self.params = jax.tree.map(np.asarray, imported.params)
    self.model = build.build_model(ml_collections.ConfigDict({"model": imported.model}))
    self.image_size, self.eos_id = facts["image_size"], facts["eos_id"]
    self.preprocess_cfg = dict(imported.preprocess)
    self.tokenizer = (
        hf_paligemma.PromptTokenizer(imported.tokenizer["path"], facts["bos_id"],
                                     facts["eos_id"], facts["loc_start"])
        if imported.tokenizer else hf_paligemma.MissingPromptTokenizer("this PaliGemma directory"))
    self._fns = {}

  def _generator(self, max_len: int, use_cache: bool):
    key = (int(max_len), bool(use_cache))
    if key not in self._fns:
      import jax  # pylint: disable=g-import-not-at-top
      from vlx import decode  # pylint: disable=g-import-not-at-top
      from vlx.families.unified import generate  # pylint: disable=g-import-not-at-top
      cfg = decode.DecodeConfig(method="greedy", max_len=key[0], use_cache=key[1])
      self._fns[key] = jax.jit(generate.make_generate_fn(self.model, cfg, self.eos_id))
    return self._fns[key]

  def generate_ids(self, pixels, prompt_ids, max_len: int = 32,
                   use_cache: bool = True) -> np.ndarray:
    """Pixels `[B, S, S, 3]` (float, preprocessed: HF's `pixel_values` channels-last; uint8
    or PIL images are preprocessed here) and prompt ids (`<bos>`, the prompt, the newline; no
    image tokens): an int array `[B, P]`, lists of any lengths (left-padded here), or one
    prompt -> greedy ids `[B, max_len]`, EOS kept, 0 after it."""
    x = self._pixels(pixels)
    if isinstance(prompt_ids, np.ndarray):
      rows = np.atleast_2d(prompt_ids).astype(np.int32).tolist()
    elif len(prompt_ids) and isinstance(prompt_ids[0], (int, np.integer)):
      rows = [list(prompt_ids)]   # one prompt
    else:
      rows = [list(r) for r in prompt_ids]
    if len(rows) != len(x) or not all(rows):
      raise ValueError(f"{len(x)} images need as many non-empty prompts, got {len(rows)}")
    width = max(len(r) for r in rows)
    prompt = np.zeros((len(rows), width), np.int32)
    mask = np.zeros((len(rows), width), bool)
    for i, r in enumerate(rows):
      prompt[i, width - len(r):], mask[i, width - len(r):] = r, True
    fn = self._generator(max_len, use_cache)
    return np.asarray(fn(self.params, x, prompt, mask, np.zeros_like(prompt)))

  def generate(self, images, prompts, max_len: int = 32) -> List[str]:
    """Images (as `preprocess` takes them, or its float output) and one prompt, or one per
    image -> the decoded answers (`<locNNNN>` tokens spelled out)."""
    x = self._pixels(images)
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if len(prompts) == 1:
      prompts = prompts * len(x)
    ids = [self.tokenizer.encode_prompt(p) for p in prompts]
    return self.tokenizer.decode(self.generate_ids(x, ids, max_len))


def _image_list(images) -> list:
  """One image or many (PIL images, uint8 arrays or image file paths) -> a list of PIL images
  or uint8 [H, W, 3] arrays (gray and RGBA made RGB), or one line saying what was expected."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  if isinstance(images, (Image.Image, str, os.PathLike)):
    return [_as_rgb(images)]
  if isinstance(images, np.ndarray):
    if images.ndim == 4 or (images.ndim == 3 and images.shape[-1] not in (1, 3, 4)):
      items = list(images)  # a batch: [B, H, W, C], or [B, H, W] grayscale
    elif images.ndim in (2, 3):
      items = [images]
    else:
      raise ValueError(f"expected an image [H, W], [H, W, C] or a batch [B, H, W, C], got an "
                       f"array of shape {images.shape}")
  elif isinstance(images, (list, tuple)):
    items = list(images)
  else:
    raise TypeError(f"expected a PIL image, a uint8 array, an image file or a list of "
                    f"them, got {type(images).__name__}")
  return [_as_rgb(im) for im in items]


def _as_rgb(image):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  if isinstance(image, (str, os.PathLike)):  # an image file
    with Image.open(image) as im:
      return im.convert("RGB")
  if isinstance(image, Image.Image):
    return image.convert("RGB")
  x = np.asarray(image)
  if x.dtype != np.uint8:
    raise ValueError(f"raw images must be uint8 (0-255), got {x.dtype}; float arrays are taken "
                     f"only as a whole batch of .preprocess output")
  if x.ndim == 2:
    x = x[..., None]
  if x.ndim != 3 or x.shape[-1] not in (1, 3, 4):
    raise ValueError(f"expected a uint8 image [H, W] or [H, W, C] with C in 1, 3, 4, got "
                     f"shape {x.shape}")
  if x.shape[-1] == 1:
    return np.repeat(x, 3, axis=-1)
  return x[..., :3] if x.shape[-1] == 4 else x


class MissingTokenizer:
  """Stands in for a checkpoint that ships no tokenizer files: images and token ids still
  encode; only turning strings into ids is refused, in one line."""

  def __init__(self, where: str):
    self.where = where

  def encode(self, texts, max_len):
    del texts, max_len
    raise FileNotFoundError(
        f"{self.where} ships no tokenizer files (vocab.json + merges.txt, tokenizer.json or "
        f"spiece.model), so strings cannot be tokenized; add them to the directory, or pass "
        f"token ids to encode_text")

  decode = encode


def _from_imported(imported, where: str = "this checkpoint") -> Pretrained:
  import jax  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  from vlx.data.tokenizer import load_tokenizer  # pylint: disable=g-import-not-at-top
  from vlx import build  # pylint: disable=g-import-not-at-top
  model = build.build_model(ml_collections.ConfigDict({"model": imported.model}))
  tokenizer = load_tokenizer(imported.tokenizer) if imported.tokenizer else MissingTokenizer(where)
  params = jax.tree.map(np.asarray, imported.params)
  return Pretrained(model, params, tokenizer, imported.preprocess,
                    imported.image_size, imported.max_len, imported.family, imported.model)


def _load_converted(directory: str) -> Pretrained:
  from vlx import convert  # pylint: disable=g-import-not-at-top
  from vlx.train import checkpoint  # pylint: disable=g-import-not-at-top
  from vlx.convert import hf_paligemma  # pylint: disable=g-import-not-at-top
  meta = convert.read_meta(directory)
  paligemma = meta["family"] == "paligemma"
  abstract = (hf_paligemma.abstract_params(meta["model"], meta["facts"]) if paligemma else
              convert.abstract_params(meta["model"], meta["image_size"], meta["max_len"]))
  import jax  # pylint: disable=g-import-not-at-top
  from vlx.convert import mapping  # pylint: disable=g-import-not-at-top
  params = checkpoint.load_params(os.path.join(directory, "checkpoints"),
                                  mapping.unflatten(abstract))
  params = jax.tree.map(np.asarray, params)
  if paligemma:
    return PretrainedPaliGemma(hf_paligemma.PaliGemmaImport(
        model=meta["model"], params=params, facts=meta["facts"], preprocess=meta["preprocess"],
        tokenizer=meta["tokenizer"]))
  imported = convert.Imported(model=meta["model"], params=params, image_size=meta["image_size"],
                              max_len=meta["max_len"], preprocess=meta["preprocess"],
                              tokenizer=meta["tokenizer"], family=meta["family"])
  return _from_imported(imported, directory)


def _finetuned_paligemma(workdir: str, config, params) -> "PretrainedPaliGemma":
  """A `configs/unified.py:ft=DIR` run: the converted PaliGemma it started from gives the
  facts (ids, image tokens) and the tokenizer, the run its weights."""
  import jax  # pylint: disable=g-import-not-at-top
  from vlx import convert  # pylint: disable=g-import-not-at-top
  from vlx.convert import hf_paligemma  # pylint: disable=g-import-not-at-top
  start = config.get("init_from", "")
  if not start or not os.path.exists(os.path.join(start, convert.PRETRAINED_JSON)):
    raise FileNotFoundError(f"{workdir} fine-tuned the PaliGemma in {start!r}, which is gone: "
                            "its facts and tokenizer are read from there")
  meta = convert.read_meta(start)
  return PretrainedPaliGemma(hf_paligemma.PaliGemmaImport(
      model=config.model.to_dict(), params=jax.tree.map(np.asarray, params),
      facts=meta["facts"], preprocess=meta["preprocess"], tokenizer=meta["tokenizer"]))


def _load_workdir(workdir: str):
  """A vlx training run: its dataset's tokenizer and its eval image size (a fine-tuned
  PaliGemma: a `PretrainedPaliGemma`)."""
  import jax  # pylint: disable=g-import-not-at-top
  from vlx.data import sources  # pylint: disable=g-import-not-at-top
  from vlx.saved_run import load_model  # pylint: disable=g-import-not-at-top
  config, model, _, params = load_model(workdir)
  if (config.data.get("tokenizer") or {}).get("type") == "paligemma":
    return _finetuned_paligemma(workdir, config, params)
  handle = sources.load_dataset(config.data)
  pp = config.data.get("pretrained_preprocess")
  pp = dict(pp) if pp else dict(resize=config.data.image_size, resize_mode="squash", crop=None,
                                mean=(0.5,) * 3, std=(0.5,) * 3, resample="bilinear")
  return Pretrained(model, jax.tree.map(np.asarray, params), handle.tokenizer, pp,
                    config.data.image_size, config.data.max_len, "vlx", config.model.to_dict())


def load(path: str, model_config: Optional[str] = None):
  """HF `CLIPModel`/`SiglipModel` dir, open_clip dir or weights file (+ `model_config`),
  a directory written by `python -m vlx.convert`, or a vlx training workdir (one that
  fine-tuned a PaliGemma, `configs/unified.py:ft=DIR`, gives a `PretrainedPaliGemma`); a HF ViViT /
  VideoMAE directory gives a `PretrainedVideo`, a HF `XCLIPModel` one a `PretrainedXClip`, a
  `PaliGemmaForConditionalGeneration` one a `PretrainedPaliGemma`."""
  from vlx import convert  # pylint: disable=g-import-not-at-top
  kind = convert.detect(path)
  if kind == "vlx":
    if os.path.exists(os.path.join(path, convert.PRETRAINED_JSON)):
      return _load_converted(path)
    return _load_workdir(path)
  from vlx.convert import hf_paligemma, hf_xclip  # pylint: disable=g-import-not-at-top
  if kind == "hf" and hf_paligemma.is_paligemma_dir(path):
    return PretrainedPaliGemma(hf_paligemma.import_dir(path))
  imported = convert.import_checkpoint(path, model_config)
  if isinstance(imported, hf_xclip.XClipImport):
    return PretrainedXClip(imported)
  if not isinstance(imported, convert.Imported):
    return PretrainedVideo(imported)
  return _from_imported(imported, path)


__all__: List[str] = ["Pretrained", "PretrainedVideo", "PretrainedXClip", "PretrainedPaliGemma",
                      "MissingTokenizer", "load", "DEFAULT_TEMPLATES"]
