"""Largest absolute differences between vlx's embeddings and the reference models' (HF CLIP,
HF SigLIP, open_clip), built as tests/test_pretrained.py builds them (random weights, small
configs). Needs the `torch` extra.

    python experiments/parity_report.py
"""
import argparse
import os
import sys
import tempfile

TESTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests")


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog="Prints one line per reference: the largest |difference| "
                                     "of the image and of the text embeddings.")
  return p.parse_args(argv)


def main(argv=None) -> int:
  parse_args(argv)  # --help exits here, before torch is needed
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  sys.path.insert(0, TESTS)
  try:
    import numpy as np, torch, transformers, open_clip  # noqa: E401,F401  pylint: disable=g-import-not-at-top,multiple-imports
  except ImportError as e:
    print(f"parity_report: needs the torch extra (torch, transformers, open_clip_torch): {e}",
          file=sys.stderr)
    return 2
  import test_pretrained as T  # pylint: disable=g-import-not-at-top
  from vlx import pretrained  # pylint: disable=g-import-not-at-top
  tmp = tempfile.mkdtemp()
  class F:  # minimal tmp_path_factory
    def mktemp(self, n):
      import pathlib; p = pathlib.Path(tempfile.mkdtemp(dir=tmp, prefix=n)); return p
  f = F()
  x = T._pixels(); texts = T.strings(64)
  d, m, tok = T.hf_clip_dir.__wrapped__(f)
  ours = pretrained.load(d); ids = ours.tokenize(texts)
  with torch.no_grad():
    ri = T._features(m.get_image_features(pixel_values=T._nchw(x))); rt = T._features(m.get_text_features(input_ids=torch.from_numpy(ids).long()))
  print("hf clip", np.abs(ours.encode_image(x)-ri).max(), np.abs(ours.encode_text(ids)-rt).max())
  sp = T.siglip_spm.__wrapped__(f)
  d, m, tok = T.hf_siglip_dir.__wrapped__(f, sp)
  ours = pretrained.load(d); ids = ours.tokenize(texts)
  with torch.no_grad():
    ri = T._features(m.get_image_features(pixel_values=T._nchw(x))); rt = T._features(m.get_text_features(input_ids=torch.from_numpy(ids).long()))
  print("hf siglip", np.abs(ours.encode_image(x)-ri).max(), np.abs(ours.encode_text(ids)-rt).max())
  d, m = T.open_clip_dir.__wrapped__(f)
  ours = pretrained.load(d); ids = ours.tokenize(texts)
  with torch.no_grad():
    ri = m.encode_image(T._nchw(x), normalize=True).numpy(); rt = m.encode_text(torch.from_numpy(ids).long(), normalize=True).numpy()
  print("open_clip", np.abs(ours.encode_image(x)-ri).max(), np.abs(ours.encode_text(ids)-rt).max())
  return 0


if __name__ == "__main__":
  sys.exit(main())
