"""Convert checkpoints from the command line.

  # HF CLIP/SigLIP dir or open_clip dir/file -> vlx dir (orbax); train from it with
  # --config.init_from=OUT, or use it with vlx.pretrained.load(OUT)
  python -m vlx.convert --src=PATH --out=OUT [--model_config=NAME_OR_JSON]

  # vlx dir (converted, or a workdir fine-tuned from one) -> HF layout (config.json +
  # model.safetensors + tokenizer files) that CLIPModel/SiglipModel.from_pretrained load
  python -m vlx.convert --src=VLX_DIR --export_hf=OUT
"""

from __future__ import annotations

import argparse
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
  from vlx import convert, pretrained  # pylint: disable=g-import-not-at-top
  if args.out:
    imported = convert.import_checkpoint(args.src, args.model_config)
    path = convert.save(imported, args.out)
    n = sum(v.size for v in convert.mapping.flatten(imported.params).values())
    print(f"wrote {path}: {imported.family} model, {n / 1e6:.2f}M parameters; train from it "
          f"with --config.init_from={path}")
    return 0
  model = pretrained.load(args.src, args.model_config)
  if model.model_config is None:
    parser.error(f"{args.src}: no model config to export")
  spec = getattr(model.tokenizer, "source_spec", None)
  convert.export_hf(model.model_config, model.params, model.image_size, args.export_hf, spec)
  print(f"wrote {args.export_hf}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
