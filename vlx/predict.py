"""Caption images with a trained model:

  python -m vlx.predict --workdir=W [--images=DIR | --split=test] [--method=greedy|beam|sample]
      [--beam_size=4] [--length_penalty=0.6] [--temperature=1 --top_k=0 --top_p=1]
      [--max_len=32] [--limit=N] [--seed=0] [--out=FILE.jsonl]

Reads the run's `config.json` and its latest checkpoint from W, captions every image in
DIR (png/jpg/jpeg/bmp/gif/webp) or the dataset split, prints `name<TAB>caption` lines
and writes them as JSON lines to --out (default W/predictions.jsonl).
"""

from __future__ import annotations

import io
import json
import os
import sys
from typing import Dict, List, Tuple

import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
FLAGS = {"workdir", "images", "split", "method", "beam_size", "length_penalty", "temperature",
         "top_k", "top_p", "max_len", "limit", "seed", "out"}


def load_run(workdir: str):
  """(config, model, mesh, handle, params) of a run's latest checkpoint."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  from vlx.data import sources  # pylint: disable=g-import-not-at-top
  from vlx.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  from vlx.train import checkpoint, trainer  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: is {workdir} a vlx workdir?")
  with open(path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  handle = sources.load_dataset(config.data)
  trainer.fit_vocab(config, handle)
  model = trainer.build_model(config)
  mesh = mesh_lib.make_mesh(config.mesh)
  rules = mesh_lib.rules_from_config(config.sharding)
  boxed = trainer.abstract_params(config, model, mesh, rules)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    shardings = mesh_lib.logical_to_shardings(boxed, mesh, rules)
  abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          mesh_lib.unbox(boxed), shardings)
  params = checkpoint.load_params(os.path.join(workdir, "checkpoints"), abstract)
  return config, model, mesh, handle, params


def _nested(record: Dict, path: str, value) -> Dict:
  """Sets record[a][b] = value for path 'a/b' (the dataset's '/'-separated keys)."""
  head, *rest = path.split("/")
  if rest:
    _nested(record.setdefault(head, {}), "/".join(rest), value)
  else:
    record[head] = value
  return record


def load_folder(directory: str, handle, config, limit=None) -> Tuple[List[str], np.ndarray]:
  """Image files -> (names, model-ready images) through the run's own eval preprocessing
  (with a resize to the model's size inserted when the run's pp has none)."""
  from vlx.data import pp_ops  # pylint: disable=g-import-not-at-top
  names = sorted(n for n in os.listdir(directory) if n.lower().endswith(IMAGE_EXTENSIONS))
  if limit:
    names = names[:int(limit)]
  if not names:
    raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {directory}")
  pp = config.data.pp_eval
  if "resize(" not in pp:
    ops = pp.split("|")
    at = ops.index("decode") + 1 if "decode" in ops else 0
    pp = "|".join(ops[:at] + [f"resize({config.data.image_size})"] + ops[at:])
  fn = pp_ops.parse(pp, handle)
  rng = np.random.default_rng(0)
  images = []
  for name in names:
    with open(os.path.join(directory, name), "rb") as f:
      record = _nested({}, handle.image_key, f.read())
    # A file has no reference captions; the record format wants one.
    _nested(record, handle.captions_key, [name])
    images.append(fn(record, rng)["image"])
  return names, np.stack(images).astype(np.float32)


def caption(workdir: str, images=None, split=None, method="greedy", beam_size=4,
            length_penalty=0.6, temperature=1.0, top_k=0, top_p=1.0, max_len=None,
            limit=None, seed=0) -> List[Dict[str, str]]:
  import jax  # pylint: disable=g-import-not-at-top
  from vlx import decode  # pylint: disable=g-import-not-at-top
  from vlx.data import pipeline  # pylint: disable=g-import-not-at-top
  from vlx.evals.common import EvalContext, run_batched  # pylint: disable=g-import-not-at-top
  config, model, mesh, handle, params = load_run(workdir)
  if not hasattr(model, "image_memory"):
    raise ValueError(f"model {config.model.name!r} does not generate text")
  if images:
    names, pixels = load_folder(images, handle, config, limit)
    refs = None
  else:
    data = pipeline.load_eval_arrays(handle, split or config.data.test_split,
                                     config.data.pp_eval, config.data.max_len,
                                     int(limit) if limit else None)
    pixels, refs = data["image"], data["caption_strings"]
    names = [f"{split or config.data.test_split}[{i}]" for i in range(len(pixels))]
  cfg = decode.DecodeConfig(method=method, max_len=int(max_len or config.data.max_len),
                            beam_size=int(beam_size), length_penalty=float(length_penalty),
                            temperature=float(temperature), top_k=int(top_k),
                            top_p=float(top_p))
  eos = handle.tokenizer.eos_id
  fn = decode.make_generate_fn(model, cfg, bos=eos, eos=eos)
  rng = jax.random.key(int(seed))
  ctx = EvalContext(model=model, mesh=mesh, handle=handle, data_config=config.data,
                    batch_size=config.get("eval_batch_size", 256))
  ids = run_batched(ctx, ("generate", cfg, int(seed)), lambda p, x: fn(p, x, rng), params,
                    pixels)
  out = []
  for i, text in enumerate(handle.tokenizer.decode(ids)):
    row = {"image": names[i], "caption": text}
    if refs is not None:
      row["references"] = list(refs[i])
    out.append(row)
  return out


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  flags = {}
  for arg in argv:
    if not arg.startswith("--") or "=" not in arg:
      print(__doc__, file=sys.stderr)
      return 2
    key, value = arg[2:].split("=", 1)
    if key not in FLAGS:
      print(f"vlx.predict: unknown flag --{key}; known: {', '.join(sorted(FLAGS))}",
            file=sys.stderr)
      return 2
    flags[key] = value
  if "workdir" not in flags:
    print(__doc__, file=sys.stderr)
    return 2
  out_path = flags.pop("out", os.path.join(flags["workdir"], "predictions.jsonl"))
  try:
    rows = caption(**flags)
  except (FileNotFoundError, ValueError) as e:
    print(f"vlx.predict: error: {e}", file=sys.stderr)
    return 2
  buf = io.StringIO()
  for row in rows:
    print(f"{row['image']}\t{row['caption']}")
    buf.write(json.dumps(row) + "\n")
  with open(out_path, "w") as f:
    f.write(buf.getvalue())
  print(f"wrote {len(rows)} captions to {out_path}", file=sys.stderr)
  return 0


if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  sys.exit(main())
