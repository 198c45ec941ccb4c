"""State dicts from disk as numpy: safetensors without torch; `.pt`/`.bin` through torch."""

from __future__ import annotations

import os
from typing import Dict

import numpy as np


def read(path: str) -> Dict[str, np.ndarray]:
  """name -> float32/int array. `.safetensors` needs only the safetensors package."""
  if not os.path.exists(path):
    raise FileNotFoundError(path)
  if path.endswith(".safetensors"):
    from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
    try:
      state = load_file(path)
    except Exception as e:  # pylint: disable=broad-except
      # bf16 checkpoints: numpy has no bfloat16, torch reads them; ml_dtypes also can.
      if "bfloat16" not in str(e).lower() and "bf16" not in str(e).lower():
        raise
      return _read_torch(path, safetensors=True)
    return {k: np.asarray(v) for k, v in state.items()}
  if path.endswith((".pt", ".pth", ".bin", ".ckpt")):
    return _read_torch(path)
  raise ValueError(f"{path}: unknown checkpoint format (expected .safetensors, .pt, .pth or .bin)")


def _read_torch(path: str, safetensors: bool = False) -> Dict[str, np.ndarray]:
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(f"{path}: reading this checkpoint needs torch; install vlx[torch]") from e
  if safetensors:
    from safetensors.torch import load_file  # pylint: disable=g-import-not-at-top
    state = load_file(path)
  else:
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):  # training checkpoints wrap the weights
      if isinstance(state, dict) and key in state and isinstance(state[key], dict):
        state = state[key]
  out = {}
  for k, v in state.items():
    if k.startswith("module."):  # DistributedDataParallel prefix
      k = k[len("module."):]
    v = v.detach().cpu()
    out[k] = v.float().numpy() if v.is_floating_point() else v.numpy()
  return out


def write(path: str, state: Dict[str, np.ndarray], metadata: Dict[str, str] = None) -> None:
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  save_file({k: np.array(v, order="C") for k, v in state.items()}, path,
            metadata=metadata or {"format": "pt"})
