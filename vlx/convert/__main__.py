"""Convert checkpoints from the command line.

  # HF CLIP/SigLIP dir or open_clip dir/file -> vlx dir (orbax); train from it with
  # --config.init_from=OUT, or use it with vlx.pretrained.load(OUT)
  python -m vlx.convert --src=PATH --out=OUT [--model_config=NAME_OR_JSON]
  # HF LXMERT / VisualBERT dir -> vlx dir; fine-tune with configs/lxmert.py:ft=OUT
  # (VisualBERT: configs/uniter.py:ft=OUT)
  # HF PaliGemma dir -> vlx dir; fine-tune with configs/unified.py:ft=OUT

  # vlx dir (converted, or a workdir fine-tuned from one) -> HF layout (config.json +
  # model.safetensors + preprocessor_config.json + tokenizer files) that
  # CLIPModel/SiglipModel.from_pretrained and AutoProcessor.from_pretrained load. Only CLIP-
  # and SigLIP-layout two_tower models export; others are refused with what HF lacks.
  python -m vlx.convert --src=VLX_DIR --export_hf=OUT
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m vlx.convert", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--src", required=True)
  parser.add_argument("--out", help="write a vlx directory here")
  parser.add_argument("--export_hf", help="write a Hugging Face directory here")
  parser.add_argument("--model_config", help="open_clip model config (JSON path or name)")
  args = parser.parse_args(argv)
  if bool(args.out) == bool(args.export_hf):
    parser.error("give exactly one of --out and --export_hf")
  from vlx import convert  # pylint: disable=g-import-not-at-top
  try:
    if args.out:
      return _import(convert, args)
    return _export(convert, args)
  except (convert.ConversionError, FileNotFoundError, FileExistsError, ValueError) as e:
    print(f"vlx.convert: error: {e}", file=sys.stderr)
    return 2


def _import(convert, args) -> int:
  from vlx.convert import hf_fusion  # pylint: disable=g-import-not-at-top
  if hf_fusion.is_fusion_dir(args.src):  # LXMERT / VisualBERT: fine-tune with ft=OUT
    imported = hf_fusion.import_dir(args.src)
    path = hf_fusion.save_for_training(imported, args.out, args.src)
    config = "lxmert" if imported.stack == "lxmert" else "uniter"
    print(f"wrote {path}: {imported.facts['family']} encoder; fine-tune it with "
          f"--config=configs/{config}.py:ft={path}")
    return 0
  imported = convert.import_checkpoint(args.src, args.model_config)
  path = convert.save(imported, args.out)
  from vlx.convert import hf_paligemma  # pylint: disable=g-import-not-at-top
  if isinstance(imported, hf_paligemma.PaliGemmaImport):
    print(f"wrote {path}: PaliGemma; fine-tune it with --config=configs/unified.py:ft={path}, "
          f"or answer prompts with python -m vlx.predict --pretrained={path}")
    return 0
  n = sum(v.size for v in convert.mapping.flatten(imported.params).values())
  print(f"wrote {path}: {imported.family} model, {n / 1e6:.2f}M parameters; train from it "
        f"with --config.init_from={path}")
  return 0


def _model_config_of(convert, src: str):
  """The vlx model config a directory holds, read without loading any weights."""
  if convert.detect(src) != "vlx":
    raise ValueError(f"{src}: --export_hf takes a vlx directory (converted, or a workdir); "
                     f"convert it first with --out")
  if os.path.exists(os.path.join(src, convert.PRETRAINED_JSON)):
    return convert.read_meta(src)["model"]
  with open(os.path.join(src, "config.json"), encoding="utf-8") as f:
    return json.load(f)["model"]


def _export(convert, args) -> int:
  from vlx import pretrained  # pylint: disable=g-import-not-at-top
  # Refuse a model HF cannot express before reading (or, for a workdir, rebuilding) anything.
  convert.hf.export_layout(_model_config_of(convert, args.src))
  model = pretrained.load(args.src, args.model_config)
  spec = getattr(model.tokenizer, "source_spec", None)
  convert.export_hf(model.model_config, model.params, model.image_size, args.export_hf, spec,
                    model.preprocess_cfg)
  print(f"wrote {args.export_hf} (config.json, model.safetensors, preprocessor_config.json"
        f"{', tokenizer files' if spec else '; no tokenizer files: this model has none in HF form'})")
  return 0

if __name__ == "__main__":
  sys.exit(main())
