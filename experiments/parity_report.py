"""Largest absolute differences between vlx's embeddings and the reference models' (HF CLIP,
HF SigLIP, open_clip), built as tests/test_pretrained.py builds them (random weights, small
configs). Needs the `torch` extra.

    python experiments/parity_report.py
"""
import os, sys, tempfile
os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
import numpy as np, torch, transformers, open_clip
import test_pretrained as T
from vlx import pretrained
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
