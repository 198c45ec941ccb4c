"""Importing PyTorch-ecosystem checkpoints: numerical parity with the reference models and
tokenizers, built here with torch on CPU (random weights, small configs), saved with the
libraries' own `save_pretrained` / state dicts, converted and compared."""

import json
import os
import random

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="parity tests need torch: pip install -e '.[torch]'")
transformers = pytest.importorskip("transformers", reason="parity tests need transformers")
open_clip = pytest.importorskip("open_clip", reason="parity tests need open_clip_torch")

from vlx import convert, pretrained  # noqa: E402
from vlx.convert import mapping  # noqa: E402
from vlx.data import clip_bpe  # noqa: E402
from vlx.data.tokenizer import SiglipTokenizer  # noqa: E402
from vlx_testlib import run_main, shapes_data_dir, train_losses, video_data_dir  # noqa: E402,F401

ATOL = 1e-4


def strings(n=300, seed=0):
  """Captions with punctuation, accents, other scripts, digits, emoji and odd whitespace."""
  words = ["a", "photo", "of", "the", "Café", "naïve", "Straße", "résumé", "ÉCOLE", "東京",
           "中文", "Москва", "ΟΔΟΣ", "don't", "it's", "we'll", "they're", "I'M", "12,345.67",
           "3.14", "e-mail", "C++", "#hashtag", "@user", "http://x.y/z?q=1", "😀", "👍🏽",
           "🇫🇷", "—", "…", "«quoted»", "(paren)", "[bracket]", "tab\there", "new\nline",
           "  spaced  ", "!!!", "?!", "dog", "DOG", "Dog's", "ﬁne", "Å", "ñandú", "x²", "½"]
  rng = random.Random(seed)
  out = ["", "   ", "a", "!!!", "hello world", "Hello, World!"]
  while len(out) < n:
    out.append(" ".join(rng.choice(words) for _ in range(rng.randint(1, 12))))
  out.append(" ".join(["long"] * 200))  # truncation
  return out


def _randomize(module, seed=0, std=0.05):
  """Random weights everywhere (layer norms included), so no parameter can be mis-mapped
  unnoticed behind an initializer's zeros or ones."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for p in module.parameters():
      p.add_(torch.randn(p.shape, generator=g) * std)


def _save_random_hf(model_cls, cfg, tok, tmp):
  """A randomized HF model and its tokenizer, written by the libraries' own save_pretrained."""
  torch.manual_seed(0)
  model = model_cls(cfg).eval()
  _randomize(model)
  out = tmp / "model"
  model.save_pretrained(out)
  tok.save_pretrained(out)
  return str(out), model, tok


def _hf_clip_vocab_files(directory):
  """vocab.json + merges.txt of OpenAI's CLIP vocabulary (from the installed open_clip)."""
  vocab, merges = clip_bpe.open_clip_vocab(clip_bpe.find_open_clip_bpe())
  with open(os.path.join(directory, "vocab.json"), "w", encoding="utf-8") as f:
    json.dump(vocab, f)
  with open(os.path.join(directory, "merges.txt"), "w", encoding="utf-8") as f:
    f.write("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")


@pytest.fixture(scope="module")
def hf_clip_dir(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("hf_clip")
  src = tmp / "vocab"
  src.mkdir()
  _hf_clip_vocab_files(str(src))
  tok = transformers.CLIPTokenizer(vocab=json.load(open(src / "vocab.json")),
                                   merges=[tuple(l.split()) for l in open(
                                       src / "merges.txt").read().split("\n")[1:] if l])
  cfg = transformers.CLIPConfig(
      text_config=dict(vocab_size=49408, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                       num_attention_heads=4, max_position_embeddings=77),
      vision_config=dict(hidden_size=48, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, image_size=32, patch_size=8),
      projection_dim=24)
  return _save_random_hf(transformers.CLIPModel, cfg, tok, tmp)


@pytest.fixture(scope="module")
def siglip_spm(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("spm")
  path = str(tmp / "spiece.model")
  import sentencepiece as spm
  texts = [s.lower() for s in strings(2000, seed=1)] * 3
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(texts), model_prefix=path[:-len(".model")], vocab_size=400,
      model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1, hard_vocab_limit=False,
      character_coverage=1.0, minloglevel=2)
  return path


@pytest.fixture(scope="module")
def hf_siglip_dir(tmp_path_factory, siglip_spm):
  tmp = tmp_path_factory.mktemp("hf_siglip")
  tok = transformers.SiglipTokenizer(vocab_file=siglip_spm)
  cfg = transformers.SiglipConfig(
      text_config=dict(vocab_size=tok.vocab_size, hidden_size=48, intermediate_size=64,
                       num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64),
      vision_config=dict(hidden_size=48, intermediate_size=80, num_hidden_layers=2,
                         num_attention_heads=4, image_size=32, patch_size=8))
  return _save_random_hf(transformers.SiglipModel, cfg, tok, tmp)


@pytest.fixture(scope="module")
def open_clip_dir(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("open_clip")
  model_cfg = dict(embed_dim=24, vision_cfg=dict(image_size=32, layers=2, width=64, head_width=16,
                                                 patch_size=8),
                   text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=4, layers=2))
  torch.manual_seed(0)
  model = open_clip.CLIP(**model_cfg).eval()
  _randomize(model)
  from safetensors.torch import save_file
  save_file({k: v.contiguous() for k, v in model.state_dict().items()},
            str(tmp / "open_clip_model.safetensors"))
  with open(tmp / "open_clip_config.json", "w") as f:
    json.dump({"model_cfg": model_cfg, "preprocess_cfg": {
        "mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]}},
        f)
  torch.save(model.state_dict(), str(tmp / "weights.pt"))
  with open(tmp / "model_cfg.json", "w") as f:
    json.dump(model_cfg, f)
  return str(tmp), model


def _pixels(n=3, size=32, seed=0):
  return np.random.default_rng(seed).normal(size=(n, size, size, 3)).astype(np.float32)


def _features(out):
  """transformers 5 returns model outputs from get_*_features, 4 returned tensors."""
  out = getattr(out, "pooler_output", out)
  return torch.nn.functional.normalize(out, dim=-1).detach().numpy()


def _nchw(x):
  return torch.from_numpy(x.transpose(0, 3, 1, 2).copy())


# ---- Tokenizers ------------------------------------------------------------------------------

def test_clip_bpe_matches_hf_tokenizer(hf_clip_dir):
  directory, _, tok = hf_clip_dir
  ours = pretrained.load(directory).tokenizer
  texts = strings()
  ref = tok(texts, padding="max_length", max_length=77, truncation=True)["input_ids"]
  got = ours.encode(texts, 77)
  bad = [t for t, r, g in zip(texts, ref, got) if list(r) != g.tolist()]
  assert not bad, f"{len(bad)} of {len(texts)} differ, e.g. {bad[:3]}"


def test_clip_bpe_matches_open_clip_tokenizer():
  texts = strings()
  ref = open_clip.get_tokenizer("ViT-B-32")(texts).numpy()
  ours = clip_bpe.ClipBpeTokenizer(*clip_bpe.open_clip_vocab(clip_bpe.find_open_clip_bpe()),
                                   normalization="open_clip")
  got = ours.encode(texts, 77)
  bad = [t for t, r, g in zip(texts, ref, got) if r.tolist() != g.tolist()]
  assert not bad, f"{len(bad)} of {len(texts)} differ, e.g. {bad[:3]}"
  assert ours.decode(got[4:5]) == ["hello world"]


def test_siglip_tokenizer_matches_hf(siglip_spm):
  texts = strings()
  tok = transformers.SiglipTokenizer(vocab_file=siglip_spm)
  ref = tok(texts, padding="max_length", max_length=64, truncation=True)["input_ids"]
  got = SiglipTokenizer(siglip_spm).encode(texts, 64)
  bad = [t for t, r, g in zip(texts, ref, got) if list(r) != g.tolist()]
  assert not bad, f"{len(bad)} of {len(texts)} differ, e.g. {bad[:3]}"


# ---- Models ----------------------------------------------------------------------------------

def test_hf_clip_parity(hf_clip_dir):
  directory, model, tok = hf_clip_dir
  ours = pretrained.load(directory)
  x = _pixels()
  with torch.no_grad():
    ref_img = _features(model.get_image_features(pixel_values=_nchw(x)))
    ids = ours.tokenize(strings(8))
    ref_txt = _features(model.get_text_features(input_ids=torch.from_numpy(ids).long()))
  np.testing.assert_allclose(ours.encode_image(x), ref_img, atol=ATOL)
  np.testing.assert_allclose(ours.encode_text(ids), ref_txt, atol=ATOL)
  assert ours.logit_scale == pytest.approx(float(model.logit_scale.exp()), rel=1e-6)
  assert ours.logit_bias is None


def test_hf_siglip_parity(hf_siglip_dir):
  directory, model, _ = hf_siglip_dir
  ours = pretrained.load(directory)
  x = _pixels()
  ids = ours.tokenize(strings(8))
  with torch.no_grad():
    ref_img = _features(model.get_image_features(pixel_values=_nchw(x)))
    ref_txt = _features(model.get_text_features(input_ids=torch.from_numpy(ids).long()))
  np.testing.assert_allclose(ours.encode_image(x), ref_img, atol=ATOL)
  np.testing.assert_allclose(ours.encode_text(ids), ref_txt, atol=ATOL)
  assert ours.logit_bias == pytest.approx(float(model.logit_bias), rel=1e-6)
  probs = ours.zero_shot(x, ["cat", "dog", "car"])
  assert probs.shape == (3, 3) and np.all((probs > 0) & (probs < 1))


@pytest.mark.parametrize("weights", ["dir", "pt"])
def test_open_clip_parity(open_clip_dir, weights):
  directory, model = open_clip_dir
  if weights == "dir":
    ours = pretrained.load(directory)
  else:
    ours = pretrained.load(os.path.join(directory, "weights.pt"),
                           model_config=os.path.join(directory, "model_cfg.json"))
  x = _pixels()
  texts = strings(8)
  ids = ours.tokenize(texts)
  np.testing.assert_array_equal(ids, open_clip.get_tokenizer("ViT-B-32")(texts).numpy())
  with torch.no_grad():
    ref_img = model.encode_image(_nchw(x), normalize=True).numpy()
    ref_txt = model.encode_text(torch.from_numpy(ids).long(), normalize=True).numpy()
  np.testing.assert_allclose(ours.encode_image(x), ref_img, atol=ATOL)
  np.testing.assert_allclose(ours.encode_text(ids), ref_txt, atol=ATOL)


# ---- Errors, round trips, preprocessing ---------------------------------------------------------

def test_unknown_and_missing_tensors_are_named(hf_clip_dir, tmp_path):
  directory, model, _ = hf_clip_dir
  from safetensors.torch import save_file
  state = {k: v.contiguous() for k, v in model.state_dict().items()}
  state["vision_model.extra_adapter.weight"] = torch.zeros(3)
  del state["text_model.final_layer_norm.bias"]
  bad = tmp_path / "bad"
  bad.mkdir()
  save_file(state, str(bad / "model.safetensors"))
  os.link(os.path.join(directory, "config.json"), bad / "config.json")
  with pytest.raises(convert.ConversionError, match="text_model.final_layer_norm.bias"):
    convert.import_checkpoint(str(bad))
  state["text_model.final_layer_norm.bias"] = torch.zeros(32)
  save_file(state, str(bad / "model.safetensors"))
  with pytest.raises(convert.ConversionError, match="vision_model.extra_adapter.weight"):
    convert.import_checkpoint(str(bad))


@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_convert_cli_and_export_round_trip(family, hf_clip_dir, hf_siglip_dir, tmp_path):
  """HF dir -> `python -m vlx.convert` -> vlx dir -> export -> HF loads it, same embeddings."""
  from vlx.convert.__main__ import main
  directory, model, _ = hf_clip_dir if family == "clip" else hf_siglip_dir
  out = tmp_path / "vlx"
  main([f"--src={directory}", f"--out={out}"])
  ours = pretrained.load(str(out))
  x = _pixels()
  with torch.no_grad():
    ref = _features(model.get_image_features(pixel_values=_nchw(x)))
  np.testing.assert_allclose(ours.encode_image(x), ref, atol=ATOL)
  back = tmp_path / "hf_again"
  main([f"--export_hf={back}", f"--src={out}"])
  cls = transformers.CLIPModel if family == "clip" else transformers.SiglipModel
  again = cls.from_pretrained(str(back)).eval()
  with torch.no_grad():
    np.testing.assert_allclose(_features(again.get_image_features(pixel_values=_nchw(x))), ref,
                               atol=ATOL)
  ref_state, new_state = model.state_dict(), again.state_dict()
  for k in ref_state:
    if family == "clip" and k.endswith(("class_embedding", "position_embedding.weight")) and (
        "vision" in k):
      continue  # vlx folds the class token's position into the class token: same function
    if k.endswith("position_ids"):
      continue
    np.testing.assert_allclose(new_state[k].numpy(), ref_state[k].numpy(), atol=1e-6, err_msg=k)


def test_preprocess_matches_hf_processor(hf_clip_dir):
  directory, _, _ = hf_clip_dir
  ours = pretrained.load(directory)
  image = (np.random.default_rng(0).random((45, 61, 3)) * 255).astype(np.uint8)
  got = ours.preprocess([image])
  assert got.shape == (1, 32, 32, 3)
  proc = transformers.CLIPImageProcessor(size={"shortest_edge": 32},
                                         crop_size={"height": 32, "width": 32})
  ref = np.asarray(proc(images=[image], return_tensors="np")["pixel_values"]).transpose(0, 2, 3, 1)
  # Bicubic resampling differs slightly between PIL and torch backends; the crop and the
  # normalization must agree.
  assert np.abs(got - ref).mean() < 0.05


def test_mapping_rules_are_inverse():
  rng = np.random.default_rng(0)
  rules = (mapping.packed_qkv("a", "x", 4) + mapping.heads_in("b", "y", 4)
           + mapping.patch_conv("c", "z", 4, bias=True))
  state = {"a.in_proj_weight": rng.normal(size=(48, 16)), "a.in_proj_bias": rng.normal(size=48),
           "a.out_proj.weight": rng.normal(size=(16, 16)), "a.out_proj.bias": rng.normal(size=16),
           "b.weight": rng.normal(size=(16, 8)), "b.bias": rng.normal(size=16),
           "c.weight": rng.normal(size=(16, 3, 4, 4)), "c.bias": rng.normal(size=16)}
  flat = mapping.import_params(state, rules)
  assert flat["x/query/kernel"].shape == (16, 4, 4)
  back = mapping.export_params(flat, rules)
  for k, v in state.items():
    np.testing.assert_allclose(back[k], v, rtol=1e-6, err_msg=k)


# ---- Fine-tuning from imported weights, through the one train step ---------------------------

@pytest.mark.parametrize("mode", ["lit", "ft"])
def test_finetune_imported_clip_on_sharded_mesh(mode, hf_clip_dir, shapes_data_dir, tmp_path):
  """configs/clip.py:{lit,ft}=DIR trains from the imported weights on 8 devices; LiT leaves the
  image tower bit for bit as imported; the result loads with vlx.pretrained and exports to HF."""
  from vlx.convert.__main__ import main
  directory, _, _ = hf_clip_dir
  imported = tmp_path / "imported"
  main([f"--src={directory}", f"--out={imported}"])
  workdir = tmp_path / "w"
  # The evaluators read text through the imported tokenizer; running them once (lit) is enough.
  evals = (("--config.evals.linear_probe.shots=(1,)",) if mode == "lit" else
           ("--config.evals={}",))
  run_main("clip", workdir, shapes_data_dir, *evals, variant=f"{mode}={imported},smoke",
           num_devices=8)
  losses = train_losses(workdir)
  assert sorted(losses) == [2, 4] and all(np.isfinite(list(losses.values())))
  before = mapping.flatten(pretrained.load(str(imported)).params)
  tuned = pretrained.load(str(workdir))
  after = mapping.flatten(tuned.params)
  assert set(before) == set(after)
  img = [k for k in before if k.startswith(("img/", "img_proj/"))]
  txt = [k for k in before if k.startswith(("txt/", "txt_proj/"))]
  moved = {k for k in before if not np.array_equal(before[k], after[k])}
  if mode == "lit":
    assert not moved.intersection(img), sorted(moved.intersection(img))[:5]
  else:
    assert moved.intersection(img)
  assert moved.intersection(txt)
  # The fine-tuned run keeps the imported tokenizer and preprocessing.
  assert tuned.tokenize(["a photo"]).tolist() == pretrained.load(
      str(imported)).tokenize(["a photo"]).tolist()
  assert tuned.preprocess([np.zeros((64, 64, 3), np.uint8)]).shape == (1, 32, 32, 3)
  back = tmp_path / "hf"
  main([f"--src={workdir}", f"--export_hf={back}"])
  again = transformers.CLIPModel.from_pretrained(str(back)).eval()
  x = _pixels()
  with torch.no_grad():
    ref = _features(again.get_image_features(pixel_values=_nchw(x)))
  np.testing.assert_allclose(tuned.encode_image(x), ref, atol=ATOL)


# ---- Export: what HF cannot express is refused; AutoProcessor reads what is written ----------

def _recipe_model(spec):
  from vlx import config_lib
  return config_lib.load_config_file(spec).model.to_dict()


@pytest.mark.parametrize("spec,named", [
    ("configs/clip.py:tiny", "image.stem='conv'"),
    ("configs/coca.py:tiny", "'coca'"),
])
def test_export_refuses_what_hf_cannot_express_in_one_line(spec, named, tmp_path, capsys):
  """The tiny recipe's conv stem and CoCa: one line naming what HF lacks, exit 2, nothing
  written (checked from the config alone, before any weights are read)."""
  from vlx.convert.__main__ import main
  model = _recipe_model(spec)
  with pytest.raises(convert.ConversionError, match=named.replace("(", r"\(")):
    convert.hf.hf_config(model, 64)
  workdir = tmp_path / "w"
  workdir.mkdir()
  (workdir / "config.json").write_text(json.dumps({"model": model, "data": {}}))
  out = tmp_path / "hf"
  assert main([f"--src={workdir}", f"--export_hf={out}"]) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and named in err and "Hugging Face" in err, err
  assert not out.exists()


@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_exported_dir_loads_with_auto_processor(family, hf_clip_dir, hf_siglip_dir, tmp_path):
  """The export writes preprocessor_config.json (and the tokenizer), so AutoProcessor works
  on it and prepares a non-square image as vlx does."""
  from vlx.convert.__main__ import main
  directory = (hf_clip_dir if family == "clip" else hf_siglip_dir)[0]
  out, back = tmp_path / "vlx", tmp_path / "hf"
  assert main([f"--src={directory}", f"--out={out}"]) == 0
  assert main([f"--src={out}", f"--export_hf={back}"]) == 0
  ours = pretrained.load(str(out))
  proc = transformers.AutoProcessor.from_pretrained(str(back))
  image = (np.random.default_rng(0).random((45, 61, 3)) * 255).astype(np.uint8)
  got = proc(images=[image], text=["a photo"], return_tensors="np")
  ref = ours.preprocess([image])
  pixels = np.asarray(got["pixel_values"]).transpose(0, 2, 3, 1)
  assert pixels.shape == ref.shape
  # PIL and torch bicubic differ slightly; the resize mode, crop and normalization must agree.
  assert np.abs(pixels - ref).mean() < 0.05
  np.testing.assert_array_equal(np.asarray(got["input_ids"])[0][:3],
                                ours.tokenize(["a photo"])[0][:3])


# ---- vlx.pretrained inputs: raw images are preprocessed, never fed raw -----------------------

def _uint8(h=45, w=61, seed=0):
  return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


def test_encode_image_preprocesses_raw_uint8(hf_clip_dir):
  """uint8 input (one image, a batch, even one already at the model's size) gives the same
  embeddings as its preprocessed pixels, not those of raw 0-255 values."""
  ours = pretrained.load(hf_clip_dir[0])
  batch = np.stack([_uint8(32, 32, 0), _uint8(32, 32, 1)])
  ref = ours.encode_image(ours.preprocess(batch))
  np.testing.assert_allclose(ours.encode_image(batch), ref, atol=1e-6)
  np.testing.assert_allclose(ours.encode_image(batch[0]), ref[:1], atol=1e-6)
  odd = _uint8()
  np.testing.assert_allclose(ours.encode_image(odd), ours.encode_image(ours.preprocess([odd])),
                             atol=1e-6)
  with pytest.raises(ValueError, match=r"\.preprocess"):
    ours.encode_image(np.zeros((1, 45, 61, 3), np.float32))


def test_zero_shot_takes_pil_lists_arrays_and_grayscale(hf_clip_dir):
  """One PIL image, a list of them, a uint8 HWC array, a batch and a 2-D grayscale array
  all work, and the same picture gets the same probabilities in every form."""
  from PIL import Image
  ours = pretrained.load(hf_clip_dir[0])
  classes = ["cat", "dog", "car"]
  rgb = _uint8()
  ref = ours.zero_shot(rgb, classes)
  assert ref.shape == (1, 3)
  np.testing.assert_allclose(ours.zero_shot(Image.fromarray(rgb), classes), ref, atol=1e-6)
  two = ours.zero_shot([Image.fromarray(rgb), Image.fromarray(rgb)], classes)
  np.testing.assert_allclose(two, np.concatenate([ref, ref]), atol=1e-6)
  np.testing.assert_allclose(ours.zero_shot(np.stack([rgb, rgb]), classes), two, atol=1e-6)
  gray = rgb[..., 0]
  as_rgb = ours.zero_shot(np.repeat(gray[..., None], 3, -1), classes)
  np.testing.assert_allclose(ours.zero_shot(gray, classes), as_rgb, atol=1e-6)
  np.testing.assert_allclose(ours.zero_shot(Image.fromarray(gray), classes), as_rgb, atol=1e-6)


def test_hf_dir_without_tokenizer_encodes_and_refuses_only_strings(hf_clip_dir, tmp_path):
  """Weights without tokenizer files: images and token ids encode; tokenize and zero-shot
  with class names are refused in one line naming the missing files."""
  directory, _, _ = hf_clip_dir
  bare = tmp_path / "bare"
  bare.mkdir()
  for name in ("config.json", "model.safetensors"):
    os.link(os.path.join(directory, name), bare / name)
  full, ours = pretrained.load(directory), pretrained.load(str(bare))
  x = _pixels()
  np.testing.assert_allclose(ours.encode_image(x), full.encode_image(x), atol=1e-6)
  ids = full.tokenize(["a photo of a cat"])
  np.testing.assert_allclose(ours.encode_text(ids), full.encode_text(ids), atol=1e-6)
  for call in (lambda: ours.tokenize(["a cat"]), lambda: ours.zero_shot(x, ["cat", "dog"])):
    with pytest.raises(FileNotFoundError, match="tokenizer files") as e:
      call()
    assert len(str(e.value).splitlines()) == 1


def test_video_transfer_starts_from_an_imported_clip(hf_clip_dir, video_data_dir, tmp_path):
  """configs/video_transfer.py:st_adapter,clip=DIR: an imported HF CLIP read frame by frame
  (its towers, tokenizer and preprocessing) trains on 8 devices; its image tower stays bit
  for bit as imported (locked) while the adapters and the text side train."""
  from vlx.convert.__main__ import main
  directory, _, _ = hf_clip_dir
  imported = tmp_path / "imported"
  main([f"--src={directory}", f"--out={imported}"])
  workdir = tmp_path / "w"
  run_main("video_transfer", workdir, video_data_dir, "--config.evals={}",
           variant=f"st_adapter,clip={imported},smoke", num_devices=8)
  losses = train_losses(workdir)
  assert sorted(losses) == [2, 4] and all(np.isfinite(list(losses.values())))
  with open(workdir / "config.json") as f:
    config = json.load(f)
  assert config["data"]["tokenizer"]["type"] == "clip_bpe"
  assert "preprocess_video(32," in config["data"]["pp_train"]
  before = mapping.flatten(pretrained.load(str(imported)).params)
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  after = mapping.flatten(ocp.PyTreeCheckpointer().restore(
      str(workdir / "checkpoints" / "4" / "state"))["params"])
  adapters = [k for k in after if k.endswith("_adapter/up/kernel")]
  assert adapters and all(np.abs(np.asarray(after[k])).max() > 0 for k in adapters)  # 0 at init
  for k, v in before.items():
    if k.startswith(("img/", "img_proj/")):
      np.testing.assert_array_equal(np.asarray(after[k]), v, err_msg=k)
  assert not np.array_equal(np.asarray(after["txt_proj/kernel"]), before["txt_proj/kernel"])
