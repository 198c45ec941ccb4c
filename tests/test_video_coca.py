"""Video CoCa (configs/video_coca.py): CoCa with a video tower in the image tower's place.
The smoke config trains and is scored through vlx.main by the captioning evaluator reading
the dataset's `video` key (and by the video evaluators, through `encode_video`); an image
CoCa keeps its parameters; padded frames never reach the captions."""

import json

import flax.linen as nn
import jax
import numpy as np
import pytest

from vlx import build, config_lib
from vlx_testlib import REPO, read_metrics, shapes_data_dir, video_data_dir  # noqa: F401

CONFIG = str(REPO / "configs" / "video_coca.py")
# Greedy captions of 16 test videos, and the twins (the video evaluators' `encode_video`).
EVALS = ("{'captioning': {'type': 'captioning', 'methods': ('greedy',), 'max_len': 8, "
         "'limit': 16, 'meteor': False, 'spice': False}, 'twins': {'type': 'twins', 'limit': 16}}")


def test_smoke_config_trains_and_captions_videos(video_data_dir, tmp_path):
  """`smoke` through vlx.main with one-layer towers: the captioning evaluator captions the
  test videos (CIDEr against their five references); the twins evaluator embeds them."""
  from vlx import main as vlx_main  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / "run"
  rc = vlx_main.main([f"--config={CONFIG}:smoke", f"--workdir={workdir}",
                      f"--config.data.source.data_dir={video_data_dir}",
                      "--config.model.image.depth=1", "--config.model.text.unimodal_depth=1",
                      "--config.model.text.multimodal_depth=1",
                      f"--config.evals={EVALS}", "--config.total_steps=2",
                      "--config.checkpoint_every=2", "--config.eval_every=2"])
  assert rc in (0, None)
  final = {k: v for r in read_metrics(workdir) if r["step"] == 2 for k, v in r.items()}
  for name in ("train/captioning/loss", "train/clip/loss", "captioning/cider",
               "captioning/greedy_bleu4", "twins/accuracy"):
    assert name in final and np.isfinite(final[name]), (name, sorted(final))
  rows = [json.loads(line) for line in (workdir / "captions.jsonl").read_text().splitlines()]
  assert len(rows) == 16 and all(len(r["references"]) == 5 for r in rows)
  # The gallery shows each video's middle frame.
  assert (workdir / "captions.html").read_text().count("<img") == 16


def _shapes(tree):
  return {"/".join(str(k.key) for k in path): leaf.shape
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _params(spec):
  config = config_lib.load_config_file(spec)
  model = build.build_model(config)
  batch = {k: v[:1] for k, v in build.dummy_batch(config).items()}
  boxed = jax.eval_shape(lambda r: model.init(r, batch, train=False)["params"],
                         jax.random.key(0))
  return _shapes(nn.meta.unbox(boxed))


def test_image_coca_keeps_its_parameters_and_video_coca_shares_all_but_the_tower():
  """An image CoCa's tower is still `img` (the ViT); the video CoCa differs from it only in
  the tower (`video_tower`): poolers, projections and decoder have the same names and shapes
  (the tiny sizes agree), so the towers plug in and nothing else moves."""
  image = _params(str(REPO / "configs" / "coca.py:tiny"))
  video = _params(f"{CONFIG}:tiny")
  assert any(k.startswith("img/") for k in image)
  assert not any(k.startswith("video_tower/") for k in image)
  assert any(k.startswith("video_tower/") for k in video)
  assert "video_tower/time_pos_embedding" in video
  rest = lambda p, tower: {k: v for k, v in p.items() if not k.startswith(tower + "/")}  # noqa: E731
  assert rest(image, "img") == rest(video, "video_tower")


def test_padded_frames_never_reach_the_captions():
  """With a frame mask, whatever the padding holds (NaN included) the decoder's memory (so
  every caption) and the contrastive embedding are those of zero padding, and finite."""
  config = config_lib.load_config_file(f"{CONFIG}:smoke")
  config.model.image.update(dict(depth=1, width=32, num_heads=2))
  config.model.text.update(dict(unimodal_depth=1, multimodal_depth=1, width=32, num_heads=2))
  config.model.embed_dim = 32
  model = build.build_model(config)
  rng = np.random.default_rng(0)
  video = rng.uniform(-1, 1, (2, 8, 32, 32, 3)).astype(np.float32)
  mask = np.ones((2, 8), bool)
  mask[1, 6:] = False
  params = nn.meta.unbox(jax.jit(model.init)(
      jax.random.key(0), {"video": video[:1], "text": np.zeros((1, 32), np.int32)})["params"])
  zero_pad, nan_pad = video.copy(), video.copy()
  zero_pad[1, 6:] = 0.0
  nan_pad[1, 6:] = np.nan
  @jax.jit
  def memory_and_embedding(v, m):
    return (model.apply({"params": params}, v, m, method="image_memory"),
            model.apply({"params": params}, v, m, method="encode_video"))
  outs = {name: jax.device_get(memory_and_embedding(v, mask))
          for name, v in (("zero", zero_pad), ("nan", nan_pad))}
  for a, b in zip(outs["zero"], outs["nan"]):
    assert np.isfinite(a).all() and np.array_equal(a, b)
