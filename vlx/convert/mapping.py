"""Two-way tensor mappings between PyTorch state dicts and vlx parameter trees.

A converter is a list of rules; each rule owns a few source tensors and a few vlx
parameters and knows how to go both ways, so import and export share one table and
cannot drift apart. `import_params` fails, naming the tensors, when the checkpoint holds
tensors no rule consumed or lacks tensors a rule needs; `export_params` is its inverse.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Iterable, List, Mapping, Sequence

import numpy as np

Flat = Dict[str, np.ndarray]  # '/'-joined vlx path or '.'-joined torch key -> array


class ConversionError(ValueError):
  """A checkpoint that does not fit the model; the message names the tensors."""


@dataclasses.dataclass
class Rule:
  """`src` keys <-> `dst` paths; `fwd(list of src arrays) -> list of dst arrays`, `bwd` inverse."""
  src: Sequence[str]
  dst: Sequence[str]
  fwd: Callable[[List[np.ndarray]], List[np.ndarray]]
  bwd: Callable[[List[np.ndarray]], List[np.ndarray]]


def copy(src: str, dst: str) -> Rule:
  return Rule([src], [dst], lambda a: [a[0]], lambda a: [a[0]])


def reshaped(src: str, dst: str, dst_shape, src_shape) -> Rule:
  return Rule([src], [dst], lambda a: [a[0].reshape(dst_shape)],
              lambda a: [a[0].reshape(src_shape)])


def linear(src: str, dst: str, bias: bool = True) -> List[Rule]:
  """torch Linear (weight [out, in]) <-> vlx dense kernel [in, out]."""
  rules = [Rule([f"{src}.weight"], [f"{dst}/kernel"], lambda a: [a[0].T], lambda a: [a[0].T])]
  if bias:
    rules.append(copy(f"{src}.bias", f"{dst}/bias"))
  return rules


def matrix(src: str, dst: str) -> Rule:
  """A bare projection matrix used as `x @ proj` (open_clip) <-> vlx kernel [in, out]."""
  return copy(src, f"{dst}/kernel")


def layer_norm(src: str, dst: str) -> List[Rule]:
  return [copy(f"{src}.weight", f"{dst}/scale"), copy(f"{src}.bias", f"{dst}/bias")]


def heads_in(src: str, dst: str, num_heads: int, bias: bool = True) -> List[Rule]:
  """torch Linear into heads ([H*hd, D]) <-> vlx kernel [D, H, hd] (and bias [H, hd])."""
  def fwd_w(a):
    w = a[0]
    return [w.T.reshape(w.shape[1], num_heads, -1)]
  def fwd_b(a):
    return [a[0].reshape(num_heads, -1)]
  rules = [Rule([f"{src}.weight"], [f"{dst}/kernel"], fwd_w,
                lambda a: [a[0].reshape(a[0].shape[0], -1).T])]
  if bias:
    rules.append(Rule([f"{src}.bias"], [f"{dst}/bias"], fwd_b, lambda a: [a[0].reshape(-1)]))
  return rules


def heads_out(src: str, dst: str, num_heads: int, bias: bool = True) -> List[Rule]:
  """torch Linear out of heads ([D, H*hd]) <-> vlx kernel [H, hd, D] (and bias [D])."""
  def fwd_w(a):
    w = a[0]
    return [w.T.reshape(num_heads, -1, w.shape[0])]
  rules = [Rule([f"{src}.weight"], [f"{dst}/kernel"], fwd_w,
                lambda a: [a[0].reshape(-1, a[0].shape[-1]).T])]
  if bias:
    rules.append(copy(f"{src}.bias", f"{dst}/bias"))
  return rules


def heads_in_no_bias(src: str, dst: str, num_heads: int) -> Rule:
  """A bias-free torch Linear into heads <-> vlx kernel [D, H, hd] and a zero bias [H, hd]
  (vlx's attention projections always have one)."""
  def fwd(a):
    w = a[0]
    return [w.T.reshape(w.shape[1], num_heads, -1), np.zeros((num_heads, w.shape[0] // num_heads),
                                                             np.float32)]
  return Rule([f"{src}.weight"], [f"{dst}/kernel", f"{dst}/bias"], fwd,
              lambda a: [a[0].reshape(a[0].shape[0], -1).T])


def packed_qkv(src: str, dst: str, num_heads: int) -> List[Rule]:
  """nn.MultiheadAttention's in_proj_weight [3D, D] / in_proj_bias [3D] <-> query/key/value."""
  def fwd_w(a):
    d = a[0].shape[1]
    return [w.T.reshape(d, num_heads, -1) for w in np.split(a[0], 3, axis=0)]
  def bwd_w(a):
    return [np.concatenate([k.reshape(k.shape[0], -1).T for k in a], axis=0)]
  def fwd_b(a):
    return [b.reshape(num_heads, -1) for b in np.split(a[0], 3)]
  def bwd_b(a):
    return [np.concatenate([b.reshape(-1) for b in a])]
  names = [f"{dst}/{n}" for n in ("query", "key", "value")]
  return [Rule([f"{src}.in_proj_weight"], [f"{n}/kernel" for n in names], fwd_w, bwd_w),
          Rule([f"{src}.in_proj_bias"], [f"{n}/bias" for n in names], fwd_b, bwd_b),
          *heads_out(f"{src}.out_proj", f"{dst}/out", num_heads)]


def patch_conv(src: str, dst: str, patch: int, channels: int = 3,
               bias: bool = True) -> List[Rule]:
  """Conv2d patchify ([D, C, p, p], NCHW) <-> vlx patch kernel [(p*p*C), D] (NHWC patches)."""
  rules = [Rule([f"{src}.weight"], [f"{dst}/kernel"],
                lambda a: [a[0].transpose(2, 3, 1, 0).reshape(-1, a[0].shape[0])],
                lambda a: [a[0].reshape(patch, patch, channels, -1).transpose(3, 2, 0, 1)])]
  if bias:
    rules.append(copy(f"{src}.bias", f"{dst}/bias"))
  return rules


def class_token(cls_src: str, pos_src: str, cls_dst: str, pos_dst: str,
                batched: bool = False) -> Rule:
  """A class embedding with its own position (row 0 of the position table, as in CLIP and
  HF ViViT) <-> vlx's class token [1, 1, D] holding that position already and patch
  positions [1, N, D]. The source is [D] and [1 + N, D] (CLIP), or with `batched` [1, 1, D]
  and [1, 1 + N, D] (ViViT). Export writes a zero row 0: the same function."""
  def to_vlx(a):
    token, table = a[0].reshape(-1), a[1].reshape(-1, a[1].shape[-1])
    return [(token + table[0]).reshape(1, 1, -1), table[1:][None]]

  def to_source(a):
    table = np.concatenate([np.zeros((1, a[1].shape[-1]), a[1].dtype), a[1][0]])
    return [a[0], table[None]] if batched else [a[0].reshape(-1), table]
  return Rule([cls_src, pos_src], [cls_dst, pos_dst], to_vlx, to_source)


def to_numpy(v) -> np.ndarray:
  """A checkpoint tensor (torch, in float32 where it is floating point, or array-like) as
  numpy."""
  if hasattr(v, "detach"):  # a torch tensor
    v = v.detach().cpu()
    return v.float().numpy() if v.is_floating_point() else v.numpy()
  return np.asarray(v)


def import_params(state: Mapping[str, np.ndarray], rules: Iterable[Rule],
                  ignore: Callable[[str], bool] = lambda k: False) -> Flat:
  """Apply `rules` to a state dict; every tensor must be used, every rule's tensors present."""
  rules = list(rules)
  wanted = [k for r in rules for k in r.src]
  missing = [k for k in wanted if k not in state]
  if missing:
    raise ConversionError(f"checkpoint lacks {len(missing)} tensor(s) the model needs: "
                          + ", ".join(missing[:20]))
  used = set(wanted)
  unknown = sorted(k for k in state if k not in used and not ignore(k))
  if unknown:
    raise ConversionError(f"checkpoint holds {len(unknown)} tensor(s) vlx does not know how to "
                          "place: " + ", ".join(unknown[:20]))
  out: Flat = {}
  for r in rules:
    values = r.fwd([np.asarray(state[k], np.float32) for k in r.src])
    out.update(zip(r.dst, values))
  return out


def export_params(flat: Mapping[str, np.ndarray], rules: Iterable[Rule]) -> Flat:
  """The inverse of `import_params`: vlx flat params -> a torch-layout state dict."""
  rules = list(rules)
  missing = [p for r in rules for p in r.dst if p not in flat]
  if missing:
    raise ConversionError("vlx params lack " + ", ".join(missing[:20]))
  out: Flat = {}
  for r in rules:
    values = r.bwd([np.asarray(flat[p], np.float32) for p in r.dst])
    out.update(zip(r.src, values))
  return out


def flatten(tree, prefix: str = "") -> Flat:
  out: Flat = {}
  for k, v in tree.items():
    path = f"{prefix}/{k}" if prefix else str(k)
    if isinstance(v, Mapping):
      out.update(flatten(v, path))
    else:
      out[path] = v
  return out


def unflatten(flat: Mapping[str, np.ndarray]) -> dict:
  tree: dict = {}
  for path, v in flat.items():
    node = tree
    *parents, leaf = path.split("/")
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = v
  return tree


def check_against(flat: Flat, abstract: Flat) -> None:
  """Every vlx parameter is produced, with the shape the model expects; nothing extra."""
  missing = sorted(set(abstract) - set(flat))
  extra = sorted(set(flat) - set(abstract))
  wrong = sorted(p for p in set(flat) & set(abstract)
                 if tuple(flat[p].shape) != tuple(abstract[p].shape))
  problems = []
  if missing:
    problems.append("no tensor for vlx params " + ", ".join(missing[:20]))
  if extra:
    problems.append("converted params the model lacks: " + ", ".join(extra[:20]))
  if wrong:
    problems.append("shape mismatches: " + ", ".join(
        f"{p} {tuple(flat[p].shape)} vs model {tuple(abstract[p].shape)}" for p in wrong[:20]))
  if problems:
    raise ConversionError("; ".join(problems))
