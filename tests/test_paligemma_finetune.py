"""Fine-tuning an imported PaliGemma through vlx's train step (`python -m vlx.convert
--src=HF_DIR --out=DIR`, then `configs/unified.py:ft=DIR`).

A tiny random PaliGemma is built here with torch, with a sentencepiece tokenizer trained on
the synthetic scenes' words (Gemma's special ids, the newline one piece) and 1024 location
tokens after it: the real model has them at 256,000, this toy at 256 (`LOC`; the converter's
`LOC_START` is patched for it). Checked: the converted directory loads as the HF one does;
each task's training text is PaliGemmaProcessor's `prompt + "\\n" + suffix + <eos>` and the
loss vlx trains on is HF's loss with those labels; a `vlx.main` run fine-tunes it on 8
devices, and its evaluators parse every grounding and detection answer."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="parity tests need torch: pip install -e '.[torch]'")
transformers = pytest.importorskip("transformers", reason="parity tests need transformers")

import jax.numpy as jnp  # noqa: E402

from PIL import Image  # noqa: E402

from vlx import build, config_lib, predict, pretrained  # noqa: E402
from vlx.convert import __main__ as convert_cli  # noqa: E402
from vlx.convert import hf_paligemma, mapping  # noqa: E402
from vlx.data import pp_ops, scene_qa, sources  # noqa: E402
from vlx.data import shapes_render as R  # noqa: E402
from vlx.data.tokenizer import load_tokenizer  # noqa: E402
from vlx.families.unified import tasks as T  # noqa: E402
from vlx.objectives.prefix_lm import suffix_loss  # noqa: E402
from vlx_testlib import (REPO, gemma_sentencepiece, random_paligemma, read_metrics,  # noqa: E402,F401
                         run_main, shapes_data_dir, shapes_handle)

LOC, SIZE, N = 256, 32, 16                # <loc0000> at 256; 16 image tokens (32 / 8)
VOCAB = LOC + 1024 + 1                    # text, 1024 location tokens, the image token
IMAGE_ID = VOCAB - 1
VISION = dict(image_size=SIZE, patch_size=8, hidden_size=32, intermediate_size=48,
              num_hidden_layers=2, num_attention_heads=4, vision_use_head=False)
TEXT = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=1, head_dim=8,
            max_position_embeddings=256)


def _scene_texts(handle, n=200):
  """What the tasks write about the scenes: captions, questions, answers, expressions, class
  names, PaliGemma's task words."""
  rng = np.random.default_rng(0)
  texts = list(T.PALIGEMMA_PROMPTS.values()) + [" " + c for c in R.class_names()]
  texts += [" ; ".join(R.class_names())] * 50   # detections' separator: " ;" one piece
  records = handle.split("train")
  for i in range(n):
    rec = records[i]
    objects = scene_qa.scene_objects(rec)
    texts += [c.decode() if isinstance(c, bytes) else str(c) for c in rec["captions"]]
    texts += list(scene_qa.ask(objects, scene_qa.question_type(rng), rng))
    texts.append(scene_qa.refer(objects, rng)[0])
  return texts


@pytest.fixture(scope="module")
def converted(tmp_path_factory, shapes_handle):
  """(HF model, its save_pretrained directory, the `python -m vlx.convert --out` one)."""
  model, _ = random_paligemma(VISION, TEXT, IMAGE_ID)
  hf_dir = tmp_path_factory.mktemp("paligemma_hf")
  model.save_pretrained(hf_dir)
  gemma_sentencepiece(str(hf_dir / "tokenizer.model"), _scene_texts(shapes_handle) * 3, LOC)
  ip = transformers.SiglipImageProcessor(size={"height": SIZE, "width": SIZE},
                                         image_mean=[0.5] * 3, image_std=[0.5] * 3, resample=2)
  ip.save_pretrained(str(hf_dir))
  out = tmp_path_factory.mktemp("paligemma_vlx") / "converted"
  mp = pytest.MonkeyPatch()
  mp.setattr(hf_paligemma, "LOC_START", LOC)
  try:
    assert convert_cli.main([f"--src={hf_dir}", f"--out={out}"]) == 0
    from_hf = pretrained.load(str(hf_dir))
  finally:
    mp.undo()
  return model, str(hf_dir), str(out), from_hf


def test_the_converted_directory_loads_as_the_hugging_face_one(converted):
  _, _, out, from_hf = converted
  pg = pretrained.load(out)
  assert isinstance(pg, pretrained.PretrainedPaliGemma)
  assert pg.imported.facts["loc_start"] == LOC
  want, got = mapping.flatten(from_hf.params), mapping.flatten(pg.params)
  assert got.keys() == want.keys()
  for k in want:
    np.testing.assert_array_equal(got[k], want[k], err_msg=k)
  images = np.random.default_rng(0).integers(0, 256, (2, 40, 48, 3), dtype=np.uint8)
  assert pg.generate(images, "caption en", max_len=8) == from_hf.generate(
      images, "caption en", max_len=8)
  with pytest.raises(ValueError, match="PaliGemma words"):   # no " ;" in a toy with none
    T.PaliGemmaWords.from_tokenizer(_NoSemicolon(pg.tokenizer.sp), VOCAB, LOC)


class _NoSemicolon:
  """A tokenizer whose " ;" takes two pieces: PaliGemma's detection separator is one."""

  def __init__(self, sp):
    self.sp = _Split(sp)


class _Split:
  def __init__(self, sp):
    self._sp = sp

  def __getattr__(self, name):
    return getattr(self._sp, name)

  def encode(self, text):
    return [5, 6] if text == " ;" else self._sp.encode(text)


def _config(out):
  return config_lib.load_config_file(f"{REPO}/configs/unified.py:ft={out},smoke")


def _example(handle, config, task, index=0):
  words = config.evals[f"unified_{task}"]
  pp = (f"decode|{words.image_pp}|unified_task({words.prompt_len}, {words.target_len}, 1024, "
        f"{LOC}, None, '{task}', False, 'paligemma', {VOCAB})")
  return pp_ops.parse(pp, handle)(dict(handle.split("test")[index]),
                                  np.random.default_rng(index))


@pytest.mark.parametrize("task", T.TASKS)
def test_each_task_is_paligemmas_prompt_and_suffix_and_the_loss_is_hfs(converted, shapes_handle,
                                                                       task):
  """The text block of `ft=DIR` is `<bos> words "\\n"` (all prefix) + `answer <eos>`, as
  PaliGemmaProcessor(text, suffix) writes it; the suffix-only loss vlx trains on equals
  HF's loss with the processor's labels (suffix tokens, -100 elsewhere) on the same pixels."""
  model, _, out, _ = converted
  config = _config(out)
  tokenizer = load_tokenizer(config.data.tokenizer)
  handle = sources.DatasetHandle(splits={"test": shapes_handle.split("test")},
                                 tokenizer=tokenizer, annotation_keys=shapes_handle.annotation_keys)
  ex = _example(handle, config, task, index=3)
  real = ex["input_mask"].astype(bool)
  ids, ar = ex["text_in"][real], ex["mask_ar"][real]
  sp = tokenizer.sp
  newline = sp.encode("\n")[0]
  prompt_end = list(ids).index(newline) + 1
  words = {"caption": "caption en", "vqa": f"answer en {ex.get('question_string', '')}",
           "grounding": f"detect {ex.get('expression_string', '')}",
           "detection": "detect all objects"}[task]
  assert list(ids[:prompt_end]) == [sp.bos_id()] + sp.encode(words + "\n")
  assert not ar[:prompt_end].any() and ar[prompt_end:].all()   # the prefix, then causal
  answer = list(ids[prompt_end:])
  assert answer[-1] == sp.eos_id() and sp.eos_id() not in answer[:-1]
  if task in ("grounding", "detection"):
    locs = [t for t in answer if LOC <= t < LOC + 1024]
    assert len(locs) == 4 * (1 if task == "grounding" else len(scene_qa.scene_objects(ex)))
  # HF's training loss on [image tokens; the block], labels on the suffix.
  hf_ids = np.concatenate([np.full(N, IMAGE_ID), ids])[None]
  types = np.concatenate([np.zeros(N + prompt_end), np.ones(len(answer))])[None]
  labels = np.where(types == 1, hf_ids, -100)
  pixels = torch.as_tensor(np.asarray(ex["image"]).transpose(2, 0, 1)[None].copy())
  with torch.no_grad():
    want = model(input_ids=torch.as_tensor(hf_ids), pixel_values=pixels,
                 token_type_ids=torch.as_tensor(types, dtype=torch.long),
                 attention_mask=torch.ones(hf_ids.shape, dtype=torch.long),
                 labels=torch.as_tensor(labels)).loss.item()
  lm = build.build_model(config)
  params = pretrained.load(out).params
  batch = {k: jnp.asarray(ex[k])[None] for k in ("image", "text_in", "mask_ar", "input_mask")}
  logits = lm.apply({"params": params}, batch)["logits"]
  got = float(suffix_loss(logits, jnp.asarray(ex["targets"])[None],
                          jnp.asarray(ex["loss_mask"])[None])[0])
  assert want > 1.0
  np.testing.assert_allclose(got, want, rtol=1e-4)


def test_finetuning_runs_through_the_train_step_on_eight_devices(converted, shapes_data_dir,
                                                                 tmp_path):
  """`python -m vlx.main --config=configs/unified.py:ft=DIR,smoke` on 8 devices: starts from the
  converted weights (its first loss far above a fresh initialisation's), trains (the loss falls at a
  large learning rate), every grounding and detection answer parses, and the run then answers
  prompts through vlx.pretrained and vlx.predict with its own weights."""
  _, _, out, _ = converted
  workdir = tmp_path / "ft"
  run_main("unified", workdir, shapes_data_dir, "--config.optimizer.lr=3e-3",
           "--config.total_steps=12", "--config.log_every=1", "--config.eval_every=12",
           "--config.checkpoint_every=12", num_devices=8, variant=f"ft={out},smoke",
           timeout=600)
  rows = read_metrics(workdir)
  losses = [r["train/loss"] for r in rows if "train/loss" in r]
  assert len(losses) >= 10 and np.isfinite(losses).all()
  # A fresh initialisation starts near ln(VOCAB) = 7.2; the imported (perturbed, sharp) one
  # far above it.
  assert losses[0] > 1.3 * np.log(VOCAB), losses
  assert np.mean(losses[-3:]) < 0.9 * np.mean(losses[:3]), losses
  final = [r for r in rows if "unified_grounding/parse_rate" in r][-1]
  assert final["unified_grounding/parse_rate"] == 1.0
  assert final["unified_detection/parse_rate"] == 1.0
  assert final["unified_grounding/num_expressions"] == 16
  assert "unified_caption/cider" in final and "unified_vqa/accuracy" in final
  # The run answers prompts as the imported model does: vlx.pretrained.load(workdir), and
  # python -m vlx.predict --pretrained=workdir, with the fine-tuned weights.
  tuned, start = pretrained.load(str(workdir)), pretrained.load(out)
  assert isinstance(tuned, pretrained.PretrainedPaliGemma)
  a, b = mapping.flatten(tuned.params), mapping.flatten(start.params)
  assert a.keys() == b.keys() and any(not np.array_equal(a[k], b[k]) for k in a)
  images = tmp_path / "images"
  images.mkdir()
  pixels = np.random.default_rng(0).integers(0, 256, (2, 40, 48, 3), dtype=np.uint8)
  for i, image in enumerate(pixels):
    Image.fromarray(image).save(images / f"{i}.png")
  answers = tmp_path / "answers.jsonl"
  assert predict.main([f"--pretrained={workdir}", "--prompt=caption en", f"--images={images}",
                       "--max_len=8", f"--out={answers}"]) == 0
  want = tuned.generate(list(pixels), "caption en", max_len=8)
  assert [json.loads(r)["answer"] for r in answers.read_text().splitlines()] == want


def test_ft_is_refused_for_a_directory_that_is_not_a_paligemma(converted, tmp_path):
  with pytest.raises(ValueError, match="vlx.convert"):
    _config(str(tmp_path))   # not converted
  meta = json.loads(open(f"{converted[2]}/vlx_pretrained.json").read())
  for name, change, needle in (("clip", dict(family="clip"), "a clip checkpoint"),
                               ("no_loc", dict(facts=dict(meta["facts"], loc_start=None)),
                                "no location tokens")):
    other = tmp_path / name
    other.mkdir()
    (other / "vlx_pretrained.json").write_text(json.dumps(dict(meta, **change)))
    with pytest.raises(ValueError, match=needle):
      _config(str(other))
  with pytest.raises(ValueError, match="ft=DIR takes only"):
    config_lib.load_config_file(f"{REPO}/configs/unified.py:ft={tmp_path},ofa")
