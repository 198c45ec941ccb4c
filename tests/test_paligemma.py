"""Hugging Face `PaliGemmaForConditionalGeneration` in vlx's prefix-LM
(vlx/convert/hf_paligemma.py, `vlx.pretrained.PretrainedPaliGemma`): a tiny random PaliGemma
built here with torch (every weight perturbed, so no mis-mapped tensor hides behind an
initializer's zeros or ones, and greedy answers are not one token repeated), saved with
`save_pretrained` and loaded with `vlx.pretrained.load`. With an image and a prompt as the
prefix (HF's `token_type_ids` 0) its logits match HF's within 1e-4 in float32 (HF numbers
positions from 1, vlx from 0: rotary attention sees only differences), and greedy decoding
gives HF `generate`'s ids, with and without the KV cache, an EOS mid-answer included."""

import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="parity tests need torch: pip install -e '.[torch]'")
transformers = pytest.importorskip("transformers", reason="parity tests need transformers")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from vlx import decode, pretrained  # noqa: E402
from vlx.convert import hf_paligemma, mapping  # noqa: E402
from vlx.families.unified import generate  # noqa: E402
from vlx.families.unified.model import positions_of  # noqa: E402
from vlx.models import masks  # noqa: E402
from vlx_testlib import gemma_sentencepiece, random_paligemma  # noqa: E402

ATOL = 1e-4
B, SIZE, N, STEPS = 2, 32, 16, 16         # 16 image tokens (32 / 8 squared)
VOCAB, IMAGE_ID = 300, 299
VISION = dict(image_size=SIZE, patch_size=8, hidden_size=32, intermediate_size=48,
              num_hidden_layers=2, num_attention_heads=4, vision_use_head=False)
TEXT = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=1, head_dim=8,
            max_position_embeddings=128)
# <bos>, a prompt, then 10 standing for the newline PaliGemma's processor ends a prompt with.
PROMPTS = np.array([[2, 17, 45, 108, 9, 10], [2, 33, 5, 71, 200, 10]])


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
  """(HF model, its save_pretrained directory, pixel_values [B, 3, S, S])."""
  model, g = random_paligemma(VISION, TEXT, IMAGE_ID)
  directory = tmp_path_factory.mktemp("paligemma")
  model.save_pretrained(directory)
  return model, str(directory), torch.randn(B, 3, SIZE, SIZE, generator=g)


@pytest.fixture(scope="module")
def loaded(saved):
  return pretrained.load(saved[1])


def _hf_inputs(prompts, pixels):
  """HF's layout: image placeholders, then the prompt, all prefix (token_type_ids 0)."""
  ids = np.concatenate([np.full((len(prompts), N), IMAGE_ID), prompts], axis=1)
  return dict(input_ids=torch.as_tensor(ids), pixel_values=pixels,
              token_type_ids=torch.zeros(ids.shape, dtype=torch.long),
              attention_mask=torch.ones(ids.shape, dtype=torch.long))


def _hf_generate(model, inputs, use_cache=True, **kw):
  """The new ids [B, STEPS]: HF stops once every row has ended and pads ended rows with its
  pad id, 0, as vlx pads after EOS."""
  with torch.no_grad():
    out = model.generate(**inputs, max_new_tokens=STEPS, do_sample=False, use_cache=use_cache,
                         **kw).numpy()
  new = out[:, inputs["input_ids"].shape[1]:]
  return np.pad(new, ((0, 0), (0, STEPS - new.shape[1])))


def _channels_last(pixels):
  return pixels.numpy().transpose(0, 2, 3, 1)


def test_logits_match_hugging_face(saved, loaded):
  model, _, pixels = saved
  with torch.no_grad():
    want = model(**_hf_inputs(PROMPTS, pixels)).logits.numpy()
  lm = loaded.model

  def logits(params, image, prompt):
    v = {"params": params}
    x = jnp.concatenate([lm.apply(v, image, method="image_embeds"),
                         lm.apply(v, prompt, method="embed_text")], axis=1)
    real = jnp.ones(x.shape[:2], bool)
    mask = masks.attention_mask(jnp.zeros(x.shape[:2], jnp.int32), real)  # all prefix
    return lm.apply(v, x, positions_of(real), mask, method="run")
  got = np.asarray(jax.jit(logits)(loaded.params, _channels_last(pixels), PROMPTS))
  assert np.abs(want[:, N:]).max() > 1.0
  np.testing.assert_allclose(got[:, N:], want[:, N:], atol=ATOL, rtol=0)


@pytest.mark.parametrize("use_cache", [True, False])
def test_greedy_generation_matches_hugging_face(saved, loaded, use_cache):
  """16 greedy tokens for two rows; the EOS is a token row 0 says at step >= 4 and row 1
  never, so one row ends early (EOS kept, zeros after) and the other runs to the end."""
  model, _, pixels = saved
  inputs = _hf_inputs(PROMPTS, pixels)
  free = _hf_generate(model, inputs, use_cache)
  assert len(set(free.ravel().tolist())) > 4   # not one token repeated: the check has teeth
  stop = next((int(t) for i, t in enumerate(free[0])
               if i >= 4 and t not in free[0][:i] and t not in free[1]), None)
  assert stop is not None, free
  want = _hf_generate(model, inputs, use_cache, eos_token_id=stop)
  end = list(want[0]).index(stop)
  assert 4 <= end < STEPS - 1 and not want[0, end + 1:].any() and stop not in want[1]
  cfg = decode.DecodeConfig(method="greedy", max_len=STEPS, use_cache=use_cache)
  fn = jax.jit(generate.make_generate_fn(loaded.model, cfg, eos=stop))
  got = fn(loaded.params, _channels_last(pixels), PROMPTS, np.ones(PROMPTS.shape, bool),
           np.zeros_like(PROMPTS))
  np.testing.assert_array_equal(np.asarray(got), want)


def test_pretrained_generate_ids_left_pads_prompts_of_any_length(saved, loaded):
  """`generate_ids` (the config's EOS): a shorter prompt, left-padded beside a longer one,
  answers as HF answers it alone."""
  model, _, pixels = saved
  short = [2, 33, 5, 10]
  got = loaded.generate_ids(_channels_last(pixels), [list(PROMPTS[0]), short], max_len=STEPS)
  np.testing.assert_array_equal(got[0], _hf_generate(model, _hf_inputs(PROMPTS[:1],
                                                                       pixels[:1]))[0])
  np.testing.assert_array_equal(got[1], _hf_generate(model, _hf_inputs(np.array([short]),
                                                                       pixels[1:]))[0])


def _sentencepiece(path):
  """A tiny sentencepiece model with Gemma's special tokens and the newline as one piece."""
  texts = ["caption en", "a cat on a mat", "detect cat ; dog", "answer en what is it"] * 20
  gemma_sentencepiece(path, texts, vocab_size=60)


def test_generate_from_a_string_prompt_as_paligemmas_processor(saved, tmp_path):
  """`vlx.pretrained.load` of a directory with a `tokenizer.model`: `generate(images,
  prompt)` builds the prompt ids HF's PaliGemmaProcessor builds, preprocesses uint8 images as
  it does, and answers what HF's generate answers, decoded by HF's tokenizer. (The toy
  vocabulary is smaller than the decoder's: ids past it are dropped by both decoders.)"""
  model, directory, _ = saved
  shutil.copytree(directory, tmp_path, dirs_exist_ok=True)
  _sentencepiece(str(tmp_path / "tokenizer.model"))
  ip = transformers.SiglipImageProcessor(size={"height": SIZE, "width": SIZE},
                                         image_mean=[0.5] * 3, image_std=[0.5] * 3, resample=3)
  ip.image_seq_length = N
  ip.save_pretrained(str(tmp_path))
  # The processor adds <image> and <locNNNN> tokens to its tokenizer; decode with a plain one.
  proc = transformers.PaliGemmaProcessor(
      image_processor=ip, tokenizer=transformers.GemmaTokenizer.from_pretrained(str(tmp_path)))
  plain = transformers.GemmaTokenizer.from_pretrained(str(tmp_path))
  images = np.random.default_rng(0).integers(0, 256, (B, 40, 48, 3), dtype=np.uint8)
  batch = proc(images=list(images), text=["caption en"] * B, return_tensors="pt")
  ids = batch["input_ids"].numpy()
  ids[:, :N] = IMAGE_ID   # the processor's <image> id is the toy tokenizer's, not the model's
  want = _hf_generate(model, dict(batch, input_ids=torch.as_tensor(ids)))
  pg = pretrained.load(str(tmp_path))
  assert isinstance(pg, pretrained.PretrainedPaliGemma)
  assert [pg.tokenizer.encode_prompt("caption en")] * B == ids[:, N:].tolist()
  hf_pixels = _channels_last(batch["pixel_values"])
  # Bicubic resampling may differ by a level, which can flip a greedy token of a random
  # model: generation below reads HF's pixels.
  np.testing.assert_allclose(pg.preprocess(images), hf_pixels, atol=2.5 / 255)
  answers = pg.generate(hf_pixels, "caption en", max_len=STEPS)
  assert answers == plain.batch_decode(want, skip_special_tokens=True)
  assert any(answers)


def test_without_a_tokenizer_strings_are_refused_in_one_line(saved, loaded):
  with pytest.raises(FileNotFoundError, match="no tokenizer.model"):
    loaded.generate(_channels_last(saved[2]), "caption en")


def test_every_key_layout_imports_alike_and_unsupported_checkpoints_are_refused(
    saved, loaded, tmp_path):
  """transformers 5's in-memory names (`model.vision_tower.*`, `model.language_model.*`),
  the hub's older ones (`vision_tower.vision_model.*`, `language_model.lm_head`) and a
  sharded directory give the params `save_pretrained`'s single file gave."""
  model, _, _ = saved
  cfg = model.config.to_dict()
  state = model.state_dict()
  hub = {k.replace("model.vision_tower.", "vision_tower.vision_model.")
          .replace("model.language_model.", "language_model.model.")
          .replace("model.multi_modal_projector.", "multi_modal_projector.")
          .replace("lm_head.", "language_model.lm_head."): v for k, v in state.items()}
  model.save_pretrained(tmp_path, max_shard_size="20KB")
  assert (tmp_path / "model.safetensors.index.json").exists()
  want = mapping.flatten(loaded.params)
  for imported in (hf_paligemma.import_state(cfg, state), hf_paligemma.import_state(cfg, hub),
                   hf_paligemma.import_dir(str(tmp_path))):
    flat = mapping.flatten(imported.params)
    assert flat.keys() == want.keys()
    for k in flat:
      np.testing.assert_array_equal(flat[k], want[k], err_msg=k)
  with pytest.raises(mapping.ConversionError, match="Gemma 1 decoder only"):
    hf_paligemma.model_config(dict(cfg, text_config=dict(cfg["text_config"],
                                                         model_type="gemma2")))
  with pytest.raises(mapping.ConversionError, match="projection_dim=16"):
    hf_paligemma.model_config(dict(cfg, projection_dim=16))
  untied = dict(state, **{"lm_head.weight": state["lm_head.weight"] + 1})
  with pytest.raises(mapping.ConversionError, match="ties them"):
    hf_paligemma.import_state(cfg, untied)
  extra = dict(state, **{"model.multi_modal_projector.extra.weight": torch.zeros(2)})
  with pytest.raises(mapping.ConversionError, match="multi_modal_projector.extra.weight"):
    hf_paligemma.import_state(cfg, extra)


def test_predict_answers_a_prompt_about_a_folder_of_images(saved, tmp_path, capsys):
  """`python -m vlx.predict --pretrained=DIR --prompt=... --images=DIR`: every readable image
  answered as `vlx.pretrained`'s generate answers it (the same preprocessing), printed and
  written as JSON lines; an unreadable file skipped and named; --prompt without --pretrained
  and flags that do not apply refused in one line."""
  import json  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from vlx import predict  # pylint: disable=g-import-not-at-top
  _, directory, _ = saved
  model_dir, images = tmp_path / "pg", tmp_path / "images"
  shutil.copytree(directory, model_dir)
  _sentencepiece(str(model_dir / "tokenizer.model"))
  images.mkdir()
  pixels = np.random.default_rng(0).integers(0, 256, (3, 40, 48, 3), dtype=np.uint8)
  for i, image in enumerate(pixels):
    Image.fromarray(image).save(images / f"{i}.png")
  (images / "broken.jpg").write_bytes(b"not a jpeg")
  out = tmp_path / "answers.jsonl"
  rc = predict.main([f"--pretrained={model_dir}", "--prompt=caption en", f"--images={images}",
                     "--max_len=8", f"--out={out}"])
  printed = capsys.readouterr()
  assert rc == 0, printed.err
  rows = [json.loads(line) for line in out.read_text().splitlines()]
  want = pretrained.load(str(model_dir)).generate(list(pixels), "caption en", max_len=8)
  assert [r["image"] for r in rows] == ["0.png", "1.png", "2.png"]
  assert [r["answer"] for r in rows] == want and any(want)
  # The Python entry point takes the files' paths too.
  assert pretrained.load(str(model_dir)).generate([images / "1.png"], "caption en",
                                                  max_len=8) == want[1:2]
  assert printed.out.splitlines() == [f"{i}.png\t{a}" for i, a in enumerate(want)]
  assert "skipped broken.jpg" in printed.err and "wrote 3 answers" in printed.err
  for argv, needle in (([f"--workdir={tmp_path}", "--prompt=caption en"], "--pretrained"),
                       ([f"--pretrained={model_dir}", "--prompt=x", f"--images={images}",
                         "--method=beam"], "--method do not apply"),
                       ([f"--pretrained={model_dir}", f"--images={images}"], "--prompt")):
    assert predict.main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1, err
