"""Video-LMM post-training on an imported PaliGemma (`configs/video_lmm.py:ft=DIR`): the
reasoning questions in PaliGemma's words and ids, the verifiers reading its tokenizer's text,
responses ending at its EOS, and the CoT SFT -> GRPO chain through `vlx.main` on 8 devices.

A tiny random PaliGemma is built with torch, its sentencepiece model (Gemma's special ids: pad
0, eos 1, bos 2) trained on the reasoning videos' words, 1024 location tokens after the text
at 256 (the real model has them at 256,000; the converter's `LOC_START` is patched for it)."""

import glob
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the import test needs torch: pip install -e '.[torch]'")
transformers = pytest.importorskip("transformers", reason="the import test needs transformers")

from vlx import build, config_lib  # noqa: E402
from vlx.convert import __main__ as convert_cli  # noqa: E402
from vlx.convert import hf_paligemma  # noqa: E402
from vlx.data import pipeline, pp_ops, sources  # noqa: E402
from vlx.families.unified import tasks as UT  # noqa: E402
from vlx.evals.common import EvalContext  # noqa: E402
from vlx.families.video_lmm import reasoning_data as RD  # noqa: E402
from vlx.families.video_lmm import tasks as T  # noqa: E402
from vlx.families.video_lmm.evals import ReasoningQA  # noqa: E402
from vlx.train.task import build_task  # noqa: E402
from vlx_testlib import (REPO, gemma_sentencepiece, mesh_of, random_paligemma,  # noqa: E402
                         read_metrics, run_main)

LOC, SIZE = 256, 32                       # <loc0000> at 256; 32 px frames, 16 tokens each
VOCAB = LOC + 1024 + 1                    # text, 1024 location tokens, the image token
VISION = dict(image_size=SIZE, patch_size=8, hidden_size=32, intermediate_size=48,
              num_hidden_layers=1, num_attention_heads=4, vision_use_head=False)
TEXT = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
            num_attention_heads=4, num_key_value_heads=1, head_dim=8,
            max_position_embeddings=512)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
  """(the reasoning videos' data dir, the converted PaliGemma directory)."""
  data_dir = str(tmp_path_factory.mktemp("rv"))
  handle = RD.reasoning_video(data_dir=data_dir, variant="small")
  texts = list(RD._texts(handle.split("cot"))) + list(UT.PALIGEMMA_PROMPTS.values())
  texts += [" ; ".join(["answer en", "caption en"])] * 50   # " ;" one piece, as Gemma's
  model, _ = random_paligemma(VISION, TEXT, VOCAB - 1)
  hf_dir = tmp_path_factory.mktemp("paligemma_hf")
  model.save_pretrained(hf_dir)
  gemma_sentencepiece(str(hf_dir / "tokenizer.model"), texts * 3, LOC)
  transformers.SiglipImageProcessor(size={"height": SIZE, "width": SIZE}, image_mean=[0.5] * 3,
                                    image_std=[0.5] * 3, resample=2).save_pretrained(str(hf_dir))
  out = str(tmp_path_factory.mktemp("paligemma_vlx") / "converted")
  mp = pytest.MonkeyPatch()
  mp.setattr(hf_paligemma, "LOC_START", LOC)
  try:
    assert convert_cli.main([f"--src={hf_dir}", f"--out={out}"]) == 0
  finally:
    mp.undo()
  return data_dir, out


def _config(out, data_dir, stage=""):
  config = config_lib.load_config_file(
      f"{REPO}/configs/video_lmm.py:ft={out}{',' + stage if stage else ''},smoke")
  config_lib.apply_overrides(config, [("data.source.data_dir", data_dir)])
  return config


def test_questions_are_paligemmas_words_and_the_rewards_read_its_tokenizer(converted):
  """A `ft=DIR` block is `<bos>answer en QUESTION\\n` (the prefix) + the CoT response + its
  EOS, nothing cut; the GRPO task ends responses at that EOS, treats location ids as no text,
  and its host-side rewards score the right response 1 and a wrong one 0 from Gemma ids."""
  data_dir, out = converted
  config = _config(out, data_dir, "grpo")
  handle = sources.load_dataset(config.data)
  sp = handle.tokenizer.sp
  rows = next(iter(pipeline.iter_split(handle, "train", config.data.pp_train, 4, 4, 0)))
  batch = pipeline.stack(rows, list(config.data["keys"]) + ["question", "thought", "answer"])
  model = build.build_model(config)
  task = build_task(config, model)
  assert (task.eos, task.text_size) == (sp.eos_id(), LOC)
  # The configured lengths hold every prompt and response of the data in these words.
  p, t = T.lengths(handle, "train", text_size=LOC, words="paligemma", vocab_size=VOCAB)
  assert p <= config.evals.reasoning_qa.prompt_len and t < config.data.max_len
  ctx = EvalContext(model=model, mesh=mesh_of(1, 1, 1, 1), handle=handle,
                    data_config=config.data)
  ev = ReasoningQA(ctx, **{k: v for k, v in config.evals.reasoning_qa.items() if k != "type"})
  assert (ev.eos, ev.text_size) == (sp.eos_id(), LOC)
  first = next(iter(ev.reader))[0]
  assert first["prompt"][first["prompt_mask"].astype(bool)][0] == sp.bos_id()
  responses = []
  for i in range(4):
    real = batch["input_mask"][i].astype(bool)
    ids, ar = batch["text_in"][i][real], batch["mask_ar"][i][real]
    end = list(ids).index(sp.encode("\n")[0]) + 1
    question = pp_ops.to_str(batch["question"][i])
    assert list(ids[:end]) == [sp.bos_id()] + sp.encode(f"answer en {question}\n")
    assert not ar[:end].any() and ar[end:].all()
    response = list(ids[end:])
    assert response[-1] == sp.eos_id() and sp.eos_id() not in response[:-1]
    want = (f"<think>{pp_ops.to_str(batch['thought'][i])}</think>"
            f"<answer>{pp_ops.to_str(batch['answer'][i])}</answer>")
    assert sp.decode(response[:-1]) == want
    responses.append(response)
  width = config.rollout.max_len
  right = np.zeros((4, width), np.int32)
  for i, r in enumerate(responses):
    right[i, :len(r)] = r
  wrong = np.zeros_like(right)
  for i in range(4):
    ids = sp.encode("<think></think><answer>no such answer</answer>") + [sp.eos_id()]
    wrong[i, :len(ids)] = ids
  truth = [batch[k] for k in ("kind_id", "answer_ids", "option_ids", "span")]
  names = list(config.rollout.rewards)
  got = task.host_rewards(right, *truth, num_frames=8)
  np.testing.assert_array_equal(got[:, names.index("accuracy")], 1.0)
  np.testing.assert_array_equal(got[:, names.index("format")], 1.0)
  got = task.host_rewards(wrong, *truth, num_frames=8)
  np.testing.assert_array_equal(got[:, names.index("accuracy")], 0.0)


def test_cot_sft_then_grpo_from_the_imported_model_on_eight_devices(converted, tmp_path):
  """`vlx.main --config=configs/video_lmm.py:ft=DIR,grpo,smoke` trains the `ft=DIR` CoT run
  first (from the converted weights: its first loss is the imported model's, far above a fresh
  initialisation's), then GRPO from it; the rollouts' rewards and the evaluation are logged."""
  data_dir, out = converted
  workdir = tmp_path / "grpo"
  run_main("video_lmm", workdir, data_dir, num_devices=8, variant=f"ft={out},grpo,smoke",
           timeout=600)
  rows = read_metrics(workdir)
  rewards = [r["train/rollout/reward"] for r in rows if "train/rollout/reward" in r]
  assert rewards and np.isfinite(rewards).all()
  final = [r for r in rows if "reasoning_qa/accuracy" in r][-1]
  assert final["reasoning_qa/num_questions"] == 16
  assert final["reasoning_qa/response_length"] > 0
  cot = [p for p in glob.glob(str(tmp_path / "**" / "metrics.jsonl"), recursive=True)
         if not p.startswith(str(workdir) + os.sep)]
  assert len(cot) == 1, cot
  losses = [r["train/loss"] for r in read_metrics(os.path.dirname(cot[0])) if "train/loss" in r]
  assert losses and np.isfinite(losses).all()
  assert losses[0] > 1.3 * np.log(VOCAB), losses   # the imported weights, not a fresh start


def test_ft_refuses_a_pretraining_stage_and_a_size(converted):
  _, out = converted
  for extra in ("pretrain", "tiny"):
    with pytest.raises(ValueError, match="ft=DIR takes a stage"):
      config_lib.load_config_file(f"{REPO}/configs/video_lmm.py:ft={out},{extra}")
