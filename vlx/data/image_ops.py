"""Resize / crop / normalize as imported checkpoints expect them (PIL resampling, as HF and
open_clip use), shared by `vlx.pretrained` and the pipeline's pp ops."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

_RESAMPLE = {"nearest": 0, "bilinear": 2, "bicubic": 3, "lanczos": 1}


def _pil(image):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  if isinstance(image, Image.Image):
    return image.convert("RGB")
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f"expected a uint8 [H, W, 3] image, got {image.dtype} {image.shape}")
  return Image.fromarray(image)


def _resize(image, size: int, mode: str = "shortest", resample: str = "bicubic") -> np.ndarray:
  """`shortest`: the short side becomes `size`, the long side keeps the aspect (truncated, as
  both references do); `squash`: `size` x `size`."""
  if resample not in _RESAMPLE:
    raise ValueError(f"unknown resample {resample!r}; known: {sorted(_RESAMPLE)}")
  img = _pil(image)
  w, h = img.size
  if mode == "shortest":
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(size * long / short)
    new_w, new_h = (size, new_long) if w <= h else (new_long, size)
  elif mode == "squash":
    new_w = new_h = size
  else:
    raise ValueError(f"unknown resize mode {mode!r}; known: shortest, squash")
  if (new_w, new_h) != (w, h):
    img = img.resize((new_w, new_h), _RESAMPLE[resample])
  return np.asarray(img)


def resize_small(image, size: int, resample: str = "bilinear") -> np.ndarray:
  """The shorter side becomes `size`; the aspect ratio is kept."""
  return _resize(image, size, "shortest", resample)


def center_crop(image: np.ndarray, size: int, rounding: str = "floor") -> np.ndarray:
  """HF crops at `(h - size) // 2`; torchvision (open_clip) rounds half the margin."""
  h, w = image.shape[:2]
  if h < size or w < size:
    raise ValueError(f"cannot crop {size} from a {h}x{w} image")
  off = (lambda m: m // 2) if rounding == "floor" else (lambda m: int(round(m / 2.0)))
  top, left = off(h - size), off(w - size)
  return image[top:top + size, left:left + size]


def inception_crop_box(height: int, width: int, rng: np.random.Generator,
                       scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), attempts: int = 10):
  """(top, left, h, w) of an Inception-style random crop (Szegedy et al. 2015, as torchvision's
  RandomResizedCrop): area a uniform fraction in `scale` of the image, aspect w/h log-uniform
  in `ratio`; after `attempts` misses, the largest centred crop whose aspect lies in `ratio`."""
  area = height * width
  log_ratio = np.log(ratio[0]), np.log(ratio[1])
  for _ in range(attempts):
    target = area * rng.uniform(scale[0], scale[1])
    aspect = float(np.exp(rng.uniform(*log_ratio)))
    w = int(round(np.sqrt(target * aspect)))
    h = int(round(np.sqrt(target / aspect)))
    if 0 < w <= width and 0 < h <= height:
      return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
  aspect = width / height
  if aspect < ratio[0]:
    w, h = width, int(round(width / ratio[0]))
  elif aspect > ratio[1]:
    h, w = height, int(round(height * ratio[1]))
  else:
    w, h = width, height
  return (height - h) // 2, (width - w) // 2, h, w


def random_resized_crop(image, size: int, rng: np.random.Generator, scale=(0.08, 1.0),
                        ratio=(3 / 4, 4 / 3), resample: str = "bilinear") -> np.ndarray:
  """A random crop (`inception_crop_box`) resized to `size` x `size` in one PIL resample."""
  if resample not in _RESAMPLE:
    raise ValueError(f"unknown resample {resample!r}; known: {sorted(_RESAMPLE)}")
  img = _pil(image)
  top, left, h, w = inception_crop_box(img.size[1], img.size[0], rng, scale, ratio)
  return np.asarray(img.resize((size, size), _RESAMPLE[resample],
                               box=(left, top, left + w, top + h)))


def normalize(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
  x = image.astype(np.float32) / 255.0
  return (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def preprocess(image, resize: int, resize_mode: str = "shortest", crop: Optional[int] = None,
               mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), resample: str = "bicubic",
               crop_rounding: str = "floor") -> np.ndarray:
  """Keyword names are those of a preprocess config (`vlx_pretrained.json`, `Pretrained`)."""
  x = _resize(image, resize, resize_mode, resample)
  if crop:
    x = center_crop(x, crop, crop_rounding)
  return normalize(x, mean, std)
