"""Hugging Face `XCLIPModel` in vlx (vlx/convert/hf_xclip.py, the `xclip` model): a small
random X-CLIP built here with torch (every parameter perturbed, so no mis-mapped tensor hides
behind an initializer's zeros or ones; text pooled where HF pools it, at the largest token
id, whatever the config's eos_token_id), saved with `save_pretrained` and loaded with
`vlx.pretrained.load`: its
`video_text_logits` match HF's `logits_per_video`, its video and text embeddings HF's
`get_video_features` / `get_text_features`, all within 1e-4 (issue 20)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="parity tests need torch: pip install -e '.[torch]'")
transformers = pytest.importorskip("transformers", reason="parity tests need transformers")

from vlx import pretrained  # noqa: E402
from vlx.convert import hf_xclip, mapping  # noqa: E402

ATOL = 1e-4
B, T, SIZE, L = 2, 4, 16, 7
TEXT = dict(vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=L)
VISION = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
              image_size=SIZE, patch_size=8, num_frames=T, mit_hidden_size=24,
              mit_intermediate_size=40, mit_num_hidden_layers=2, mit_num_attention_heads=2)
TOP = dict(projection_dim=24, prompt_layers=2, prompt_num_attention_heads=4, prompt_alpha=0.1)
# HF's X-CLIP pools text at the largest token id whatever eos_token_id says (it forces the
# legacy behaviour); the token ids below put a larger id before the end-of-text token, so a
# converter that pooled at the configured EOS would fail.
CASES = {"eos_token_id_49": dict(eos_token_id=49), "eos_token_id_2": dict(eos_token_id=2)}


@pytest.fixture(scope="module", params=list(CASES))
def saved(request, tmp_path_factory):
  """(directory, HF outputs as numpy, videos channels last, token ids)."""
  cfg = transformers.XCLIPConfig(text_config=dict(TEXT, **CASES[request.param]),
                                 vision_config=VISION, **TOP)
  model = transformers.XCLIPModel(cfg)
  g = torch.Generator().manual_seed(0)
  with torch.no_grad():
    for p in model.parameters():
      p.add_(torch.randn(p.shape, generator=g) * 0.2)
  model.eval()
  directory = tmp_path_factory.mktemp(request.param)
  model.save_pretrained(directory)
  video = torch.randn(B, T, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
  rng = np.random.default_rng(2)
  ids = rng.integers(3, 40, (3, L))
  ids[:, 2] = 48  # the largest id, where HF pools
  ids[:, 5] = 45  # the "end of text" of a config whose eos_token_id would say otherwise
  ids[:, 6:] = 1
  ids = torch.as_tensor(ids)
  with torch.no_grad():
    out = model(input_ids=ids, pixel_values=video)
    ref = {"logits_per_video": out.logits_per_video.numpy(),
           "video": model.get_video_features(pixel_values=video).pooler_output.numpy(),
           "text": model.get_text_features(input_ids=ids).pooler_output.numpy()}
  return str(directory), ref, video.numpy().transpose(0, 1, 3, 4, 2), ids.numpy()


def test_video_text_logits_match_hugging_face(saved):
  directory, ref, video, ids = saved
  model = pretrained.load(directory)
  assert isinstance(model, pretrained.PretrainedXClip)
  logits = model.video_text_logits(video, ids)
  assert logits.shape == ref["logits_per_video"].shape == (B, 3)
  diff = float(np.abs(logits - ref["logits_per_video"]).max())
  print(f"logits_per_video: max abs diff {diff:.2e} "
        f"(values up to {np.abs(ref['logits_per_video']).max():.2f})")
  assert diff < ATOL
  want = ref["video"] / np.linalg.norm(ref["video"], axis=-1, keepdims=True)
  np.testing.assert_allclose(model.encode_video(video), want, atol=ATOL)
  np.testing.assert_allclose(model.encode_text(ids), ref["text"], atol=ATOL)


def test_a_checkpoint_that_does_not_fit_names_the_tensor(saved):
  directory, _, _, _ = saved
  from vlx.convert import hf  # pylint: disable=g-import-not-at-top
  state = hf.read_state(directory)
  state.pop("prompts_generator.alpha")
  with pytest.raises(mapping.ConversionError, match="prompts_generator.alpha"):
    hf_xclip.import_state(hf.read_config(directory), state)
  state = dict(hf.read_state(directory), extra_tensor=np.zeros(3))
  with pytest.raises(mapping.ConversionError, match="extra_tensor"):
    hf_xclip.import_state(hf.read_config(directory), state)


def test_frames_are_preprocessed_as_the_directorys_processor_does(saved, tmp_path):
  """uint8 frames go through the directory's preprocessor_config.json (XCLIPProcessor's
  VideoMAEImageProcessor: shortest side, centre crop, its mean and std) and score as the
  processor's pixel values do; without that file, the processor's defaults."""
  directory, _, _, ids = saved
  import shutil  # pylint: disable=g-import-not-at-top
  here = tmp_path / "with_processor"
  shutil.copytree(directory, here)
  mean, std = (0.2, 0.4, 0.6), (0.3, 0.2, 0.1)
  proc = transformers.VideoMAEImageProcessor(
      size={"shortest_edge": SIZE}, crop_size={"height": SIZE, "width": SIZE},
      image_mean=list(mean), image_std=list(std))
  proc.save_pretrained(here)
  frames = (np.random.default_rng(3).random((B, T, 45, 61, 3)) * 255).astype(np.uint8)
  model = pretrained.load(str(here))
  got = model.preprocess(frames)
  assert got.shape == (B, T, SIZE, SIZE, 3)
  # The processor takes a batch of clips, each a list of frames: [B, T, 3, S, S].
  ref = np.asarray(proc(images=[list(clip) for clip in frames], return_tensors="np")[
      "pixel_values"]).transpose(0, 1, 3, 4, 2)
  # Resampling differs slightly between PIL and torch backends; crop and normalisation agree.
  assert np.abs(got - ref).mean() < 0.05, np.abs(got - ref).mean()
  np.testing.assert_allclose(model.video_text_logits(frames, ids),
                             model.video_text_logits(got, ids), atol=1e-5)
  # One clip as a list of frames is a batch of one.
  np.testing.assert_array_equal(model.preprocess([list(frames[0])]), got[:1])
  default = pretrained.load(directory).imported.preprocess
  assert (default["mean"], default["resample"], default["crop"]) == ((0.5,) * 3, "bilinear", SIZE)
