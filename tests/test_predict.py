"""`python -m vlx.predict`'s own edges, without training a model: its flags (--help,
--limit), and a folder of images of any shape with a corrupt file among them (the end to end
run on a trained CoCa is in test_coca.py)."""

import types

import ml_collections
import numpy as np
import pytest
from PIL import Image

from vlx import predict


def _config(pp_eval="decode|value_range(-1,1)", image_size=32):
  return ml_collections.ConfigDict({"data": {"pp_eval": pp_eval, "image_size": image_size}})


HANDLE = types.SimpleNamespace(image_key="image", captions_key="captions", label_key=None,
                               annotation_keys=())


def test_help_prints_usage_and_options_and_exits_0(capsys):
  for flag in ("--help", "-h"):
    assert predict.main([flag]) == 0
    out = capsys.readouterr().out
    assert "--workdir" in out and "--limit" in out and "central_crop" in out


@pytest.mark.parametrize("limit", ["0", "-3", "x"])
def test_limit_below_one_is_refused_in_one_line(limit, tmp_path, capsys):
  assert predict.main([f"--workdir={tmp_path}", f"--images={tmp_path}",
                       f"--limit={limit}"]) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and f"--limit={limit}" in err, err


def test_folder_keeps_aspect_and_skips_corrupt_files_by_name(tmp_path):
  """A 32x64 image whose outer quarters are black and middle half white comes out all white
  (shorter side resized, centre crop), not squashed; a corrupt file is named and skipped."""
  wide = np.zeros((32, 64, 3), np.uint8)
  wide[:, 16:48] = 255
  Image.fromarray(wide).save(tmp_path / "a_wide.png")
  (tmp_path / "b_broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
  Image.fromarray(np.full((48, 48, 3), 255, np.uint8)).save(tmp_path / "c_square.png")
  names, images, skipped = predict.load_folder(str(tmp_path), HANDLE, _config())
  assert names == ["a_wide.png", "c_square.png"]
  assert images.shape == (2, 32, 32, 3)
  assert np.all(images[0] > 0.95), images[0].min()  # white in [-1, 1]: no black edge squashed in
  assert [name for name, _ in skipped] == ["b_broken.jpg"] and skipped[0][1]
  # A run whose eval pp squashes (resize(S)) gets the aspect-keeping ops instead.
  assert predict.folder_pp(_config("decode|resize(32)|value_range(-1,1)")) == (
      "decode|resize_small(32)|central_crop(32)|value_range(-1,1)")
  (tmp_path / "a_wide.png").unlink()
  (tmp_path / "c_square.png").unlink()
  with pytest.raises(ValueError, match="b_broken.jpg"):
    predict.load_folder(str(tmp_path), HANDLE, _config())
