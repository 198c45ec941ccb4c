"""Caption images with a trained model, or answer a prompt about them with an imported one:

  python -m vlx.predict --workdir=W [--images=DIR | --split=test] [--method=greedy|beam|sample]
      [--beam_size=4] [--length_penalty=0.6] [--temperature=1 --top_k=0 --top_p=1]
      [--max_len=32] [--limit=N] [--seed=0] [--out=FILE.jsonl]
  python -m vlx.predict --pretrained=DIR --prompt="caption en" --images=DIR [--max_len=32]
      [--limit=N] [--out=FILE.jsonl]

The first reads the run's `config.json` and its latest checkpoint from W, captions every
image in DIR (png/jpg/jpeg/bmp/gif/webp) or the dataset split, prints `name<TAB>caption`
lines and writes them as JSON lines to --out (default W/predictions.jsonl). The second loads
a PaliGemma (`vlx.pretrained.load`: a Hugging Face directory with its `tokenizer.model`, the
`python -m vlx.convert` directory of one, or a run that fine-tuned one, configs/unified.py:ft=DIR)
and answers the prompt about every image in DIR, greedily ("caption en", "answer en what is
on the table", "detect cat": boxes come as `<locNNNN>` tokens), printing
`name<TAB>answer` and writing JSON lines to --out (default ./predictions.jsonl).

Options:
  --workdir=W         a vlx training run (this or --pretrained is required)
  --pretrained=DIR    a model that answers prompts (a PaliGemma: HF, converted or fine-tuned)
  --prompt=TEXT       the prompt (with --pretrained; one for every image)
  --images=DIR        caption the image files in DIR (sorted by name)
  --split=NAME        caption the dataset's split instead (default: the run's test split)
  --method=M          greedy (default) | beam | sample
  --beam_size=K       beams for --method=beam (4)
  --length_penalty=A  beam length normalization exponent (0.6)
  --temperature=T --top_k=K --top_p=P   sampling controls for --method=sample
  --max_len=N         longest caption in tokens (default: the run's max_len)
  --limit=N           only the first N images (N >= 1)
  --seed=S            sampling seed (0)
  --out=FILE          JSON lines output (default W/predictions.jsonl)
  -h, --help          this text

Images from a folder keep their aspect ratio: the run's evaluation preprocessing, with its
square resize (if any) replaced by `resize_small(S)|central_crop(S)` (the shorter side
resized to the model's size S, then the centred S x S crop); the pp string used is printed.
A file that cannot be decoded is skipped, named on stderr and counted in the summary line.
With --pretrained, images are preprocessed as the directory's processor does.
"""

from __future__ import annotations

import io
import json
import os
import sys
from typing import Dict, List, Tuple

import numpy as np

from vlx.saved_run import load_model, load_run  # noqa: F401  (predict's own loaders, kept here)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
FLAGS = {"workdir", "images", "split", "method", "beam_size", "length_penalty", "temperature",
         "top_k", "top_p", "max_len", "limit", "seed", "out", "pretrained", "prompt"}
# What --pretrained takes besides itself (its decoding is greedy).
PRETRAINED_FLAGS = {"pretrained", "prompt", "images", "max_len", "limit", "out"}


def _nested(record: Dict, path: str, value) -> Dict:
  """Sets record[a][b] = value for path 'a/b' (the dataset's '/'-separated keys)."""
  head, *rest = path.split("/")
  if rest:
    _nested(record.setdefault(head, {}), "/".join(rest), value)
  else:
    record[head] = value
  return record


def folder_pp(config) -> str:
  """The run's eval pp for image files of any shape: a square `resize(S)` becomes
  `resize_small(S)|central_crop(S)`, and one is inserted after `decode` when there is none."""
  size = int(config.data.image_size)
  keep_aspect = f"resize_small({size})|central_crop({size})"
  ops = [op.strip() for op in config.data.pp_eval.split("|") if op.strip()]
  if any(op.startswith(("resize_small(", "central_crop(", "preprocess_image(",
                        "random_resized_crop(")) for op in ops):
    return "|".join(ops)
  ops = [keep_aspect if op.startswith("resize(") else op for op in ops]
  if keep_aspect not in ops:
    at = ops.index("decode") + 1 if "decode" in ops else 0
    ops = ops[:at] + [keep_aspect] + ops[at:]
  return "|".join(ops)


def image_files(directory: str, limit=None) -> List[str]:
  """The image file names in `directory`, sorted (the first `limit`)."""
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"--images={directory}: not a directory")
  names = sorted(n for n in os.listdir(directory) if n.lower().endswith(IMAGE_EXTENSIONS))
  if limit is not None:
    names = names[:int(limit)]
  if not names:
    raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {directory}")
  return names


def load_folder(directory: str, handle, config, limit=None
                ) -> Tuple[List[str], np.ndarray, List[Tuple[str, str]]]:
  """Image files -> (names, model-ready images, skipped [(name, reason)]) through
  `folder_pp(config)`. A file that does not decode is skipped, not fatal."""
  from vlx.data import pp_ops  # pylint: disable=g-import-not-at-top
  names = image_files(directory, limit)
  fn = pp_ops.parse(folder_pp(config), handle)
  rng = np.random.default_rng(0)
  kept, images, skipped = [], [], []
  for name in names:
    with open(os.path.join(directory, name), "rb") as f:
      record = _nested({}, handle.image_key, f.read())
    # A file has no reference captions; the record format wants one.
    _nested(record, handle.captions_key, [name])
    try:
      images.append(fn(record, rng)["image"])
    except pp_ops.CorruptRecord as e:
      skipped.append((name, str(e)))
      continue
    kept.append(name)
  if not kept:
    raise ValueError(f"none of the {len(names)} image files in {directory} could be read "
                     f"(e.g. {skipped[0][0]}: {skipped[0][1]})")
  return kept, np.stack(images).astype(np.float32), skipped


def caption(workdir: str, images=None, split=None, method="greedy", beam_size=4,
            length_penalty=0.6, temperature=1.0, top_k=0, top_p=1.0, max_len=None,
            limit=None, seed=0) -> List[Dict[str, str]]:
  """Rows {"image", "caption"[, "references"]}; a folder's unreadable files come as rows
  {"image", "error"} after the captioned ones (main prints them apart)."""
  import jax  # pylint: disable=g-import-not-at-top
  from vlx import decode  # pylint: disable=g-import-not-at-top
  from vlx.data import pipeline  # pylint: disable=g-import-not-at-top
  from vlx.evals.common import EvalContext, run_batched  # pylint: disable=g-import-not-at-top
  config, model, mesh, handle, params = load_run(workdir)
  if not hasattr(model, "image_memory"):
    raise ValueError(f"model {config.model.name!r} does not generate text")
  skipped = []
  if images:
    names, pixels, skipped = load_folder(images, handle, config, limit)
    refs = None
  else:
    data = pipeline.load_eval_arrays(handle, split or config.data.test_split,
                                     config.data.pp_eval, config.data.max_len,
                                     None if limit is None else int(limit))
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
  return out + [{"image": name, "error": reason} for name, reason in skipped]


def answer(pretrained: str, prompt: str, images: str, max_len=32, limit=None,
           batch_size: int = 8) -> List[Dict[str, str]]:
  """Rows {"image", "prompt", "answer"}: an imported model's greedy answer to `prompt` about
  every image file in `images` (its own preprocessing); unreadable files come as rows
  {"image", "error"} after the answered ones."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from vlx import pretrained as pretrained_lib  # pylint: disable=g-import-not-at-top
  model = pretrained_lib.load(pretrained)
  if not hasattr(model, "generate"):
    raise ValueError(f"--pretrained={pretrained}: a {model.family} model does not answer "
                     "prompts (a PaliGemma directory does)")
  kept, decoded, skipped = [], [], []
  for name in image_files(images, limit):
    try:
      with Image.open(os.path.join(images, name)) as im:
        decoded.append(im.convert("RGB"))
    except Exception as e:  # pylint: disable=broad-except
      skipped.append({"image": name, "error": f"not a readable image ({e})"})
      continue
    kept.append(name)
  if not kept:
    raise ValueError(f"none of the image files in {images} could be read "
                     f"(e.g. {skipped[0]['image']}: {skipped[0]['error']})")
  texts = []
  for i in range(0, len(decoded), batch_size):
    texts += model.generate(decoded[i:i + batch_size], prompt, max_len=int(max_len or 32))
  return [{"image": name, "prompt": prompt, "answer": text}
          for name, text in zip(kept, texts)] + skipped


def _usage_error(message: str) -> int:
  print(f"vlx.predict: {message} (see python -m vlx.predict --help)", file=sys.stderr)
  return 2


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  if any(a in ("-h", "--help") for a in argv):
    print(__doc__)
    return 0
  flags = {}
  for arg in argv:
    if not arg.startswith("--") or "=" not in arg:
      return _usage_error(f"expected --name=value, got {arg!r}")
    key, value = arg[2:].split("=", 1)
    if key not in FLAGS:
      print(f"vlx.predict: unknown flag --{key}; known: {', '.join(sorted(FLAGS))}",
            file=sys.stderr)
      return 2
    flags[key] = value
  if "pretrained" in flags:
    if "workdir" in flags:
      return _usage_error("give --workdir=W (a vlx run) or --pretrained=DIR, not both")
    extra = sorted(set(flags) - PRETRAINED_FLAGS)
    if extra:
      return _usage_error(f"--pretrained answers greedily from --images with --prompt; "
                          f"{', '.join('--' + k for k in extra)} do not apply")
    if not flags.get("images") or not flags.get("prompt"):
      return _usage_error("--pretrained=DIR needs --images=DIR and --prompt=TEXT")
  elif "prompt" in flags:
    return _usage_error("--prompt goes with --pretrained=DIR (an imported PaliGemma); a "
                        "--workdir run captions without one")
  elif "workdir" not in flags:
    return _usage_error("--workdir=W (a vlx run) or --pretrained=DIR is required")
  if "limit" in flags:
    try:
      limit = int(flags["limit"])
    except ValueError:
      limit = 0
    if limit < 1:
      return _usage_error(f"--limit={flags['limit']}: give a whole number of images >= 1 "
                          f"(leave it out for all)")
  out_path = flags.pop("out", os.path.join(flags.get("workdir", "."), "predictions.jsonl"))
  if flags.get("images"):
    import ml_collections  # pylint: disable=g-import-not-at-top
    try:
      with open(os.path.join(flags["workdir"], "config.json")) as f:
        config = ml_collections.ConfigDict(json.load(f))
      print(f"vlx.predict: preprocessing {flags['images']} with {folder_pp(config)!r} "
            f"(aspect kept: shorter side resized, centre crop)", file=sys.stderr)
    except (OSError, ValueError, KeyError, AttributeError):
      pass  # caption() below says what is wrong with the workdir
  key = "answer" if "pretrained" in flags else "caption"
  try:
    rows = answer(**flags) if key == "answer" else caption(**flags)
  except (FileNotFoundError, ValueError) as e:
    print(f"vlx.predict: error: {e}", file=sys.stderr)
    return 2
  done = [row for row in rows if "error" not in row]
  skipped = [row for row in rows if "error" in row]
  buf = io.StringIO()
  for row in done:
    print(f"{row['image']}\t{row[key]}")
    buf.write(json.dumps(row) + "\n")
  for row in skipped:
    print(f"vlx.predict: skipped {row['image']}: {row['error']}", file=sys.stderr)
  with open(out_path, "w") as f:
    f.write(buf.getvalue())
  summary = f"wrote {len(done)} {key}s to {out_path}"
  if skipped:
    summary += (f"; skipped {len(skipped)} unreadable image file(s): "
                f"{', '.join(row['image'] for row in skipped)}")
  print(summary, file=sys.stderr)
  return 0

if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  sys.exit(main())
