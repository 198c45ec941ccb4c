"""BERT WordPiece (vlx/data/bert_wordpiece.py): ids equal to Hugging Face's `BertTokenizer` on
a small vocab.txt; and an LXMERT conversion carries the vocabulary, so that `ft=DIR` reads the
data's text with it."""

import json
import os

import numpy as np
import pytest

from vlx.data import bert_wordpiece
from vlx.data.tokenizer import load_tokenizer
from vlx_testlib import REPO

transformers = pytest.importorskip("transformers", reason="parity needs transformers")

WORDS = ["the", "a", "red", "cube", "is", "left", "of", "sphere", "blue", "cafe", "naive",
         "un", "##believ", "##able", "play", "##ing", "##s", "##ed", "big", "Big", "The",
         "Red", "##er", "x", "##y", "中", "?", ",", ".", "!", "'", "-", "(", ")", "$", "é"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS

SENTENCES = [
    "The red cube is left of the sphere.",
    "A BIG blue cube, playing!",
    "Unbelievable: playing played players?",
    "Café naïve — Naïve CAFÉ",
    "zebra crossing qwerty",
    "the (big) cube's $ sphere-cube",
    "\tthe\u00a0red\x00 cube\u200b\n\rblue  ",
    "中文 the中cube",
    "xyxy xy" + "y" * 120,
    "the [MASK] cube is [UNK] red",
    "",
    "the red cube is left of the blue sphere the red cube is left of the blue sphere the",
]


def hf_bert(vocab_file, lower_case):
  """Hugging Face's BertTokenizer on `vocab_file`, the reference. from_pretrained on its
  folder: transformers 5 silently ignores `BertTokenizer(vocab_file=...)` (5 ids only)."""
  ref = transformers.BertTokenizer.from_pretrained(os.path.dirname(vocab_file),
                                                   do_lower_case=lower_case)
  assert len(ref) == len(open(vocab_file, encoding="utf-8").read().splitlines())
  return ref


@pytest.fixture(scope="module")
def vocab_file(tmp_path_factory):
  path = tmp_path_factory.mktemp("wordpiece") / "vocab.txt"
  path.write_text("".join(t + "\n" for t in VOCAB), encoding="utf-8")
  return str(path)


@pytest.mark.parametrize("lower_case", [True, False])
@pytest.mark.parametrize("max_len", [6, 16, 64])
def test_ids_equal_hf_bert_tokenizer(vocab_file, lower_case, max_len):
  ref = hf_bert(vocab_file, lower_case)
  want = ref(SENTENCES, max_length=max_len, truncation=True, padding="max_length")["input_ids"]
  tok = load_tokenizer({"type": "bert_wordpiece", "path": vocab_file, "lower_case": lower_case})
  assert isinstance(tok, bert_wordpiece.BertWordPieceTokenizer)
  assert len(set(np.ravel(want))) > (5 if max_len == 6 else 15)  # a real vocabulary, not [UNK]s
  got = tok.encode(SENTENCES, max_len)
  assert got.dtype == np.int32 and got.shape == (len(SENTENCES), max_len)
  for sentence, g, w in zip(SENTENCES, got.tolist(), want):
    assert g == w, (sentence, tok.tokenize(sentence), ref.tokenize(sentence))
  assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 1, 2, 3, 4)
  assert tok.eos_id == tok.sep_id and tok.vocab_size == len(VOCAB)
  # without [CLS] (FusionModel prepends its own): the same ids, shifted left
  no_cls = load_tokenizer({"type": "bert_wordpiece", "path": vocab_file,
                           "lower_case": lower_case, "add_cls": False})
  short = no_cls.encode(SENTENCES, max_len - 1)
  np.testing.assert_array_equal(short, got[:, 1:])
  assert tok.decode(tok.encode(["The red cube is playing."], 16)) == (
      ["the red cube is playing ."] if lower_case else ["The red cube is playing ."])


def test_lxmert_conversion_carries_the_wordpiece_tokenizer(tmp_path):
  """A tiny LXMERT with a BERT-style vocab.txt (cased, from tokenizer_config.json) -> the
  converted directory holds the vocabulary, and the ft config's `data.tokenizer` loads it,
  [SEP] being the model's text EOS."""
  torch = pytest.importorskip("torch", reason="the conversion test needs torch")
  from test_fusion_finetune import HF, _randomize  # pylint: disable=g-import-not-at-top
  from vlx import config_lib, convert  # pylint: disable=g-import-not-at-top
  from vlx.convert import hf_fusion  # pylint: disable=g-import-not-at-top
  src, out = tmp_path / "hf", tmp_path / "vlx"
  torch.manual_seed(0)
  model = transformers.LxmertForPreTraining(transformers.LxmertConfig(**HF)).eval()
  _randomize(model)
  model.save_pretrained(src)
  # BERT's layout: [PAD] 0, [UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103
  vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
  vocab += WORDS + [f"w{i}" for i in range(HF["vocab_size"] - len(vocab) - len(WORDS))]
  assert len(vocab) == HF["vocab_size"]
  (src / "vocab.txt").write_text("".join(t + "\n" for t in vocab), encoding="utf-8")
  (src / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}))
  hf_fusion.save_for_training(hf_fusion.import_dir(str(src)), str(out), str(src))

  meta = convert.read_meta(str(out))
  spec = meta["tokenizer"]
  assert spec["type"] == "bert_wordpiece" and spec["lower_case"] is False
  assert spec["add_cls"] is False
  assert os.path.dirname(spec["path"]).startswith(str(out))  # a copy beside the weights
  assert open(spec["path"], encoding="utf-8").read().split("\n")[:-1] == vocab

  c = config_lib.load_config_file(f"{REPO}/configs/lxmert.py:ft={out},smoke")
  assert c.data.tokenizer.type == "bert_wordpiece"
  tok = load_tokenizer(dict(c.data.tokenizer))
  assert isinstance(tok, bert_wordpiece.BertWordPieceTokenizer)
  assert c.model.text.eos_id == tok.sep_id == 102 and tok.pad_id == 0
  assert tok.mask_id == 103 and tok.cls_id == 101
  ref = hf_bert(str(src / "vocab.txt"), lower_case=False)
  texts = ["The Red cube is left of the sphere?", "the big blue CUBE"]
  want = ref(texts, max_length=c.data.max_len + 1, truncation=True,
             padding="max_length")["input_ids"]
  got = tok.encode(texts, c.data.max_len)  # FusionModel prepends its [CLS]
  np.testing.assert_array_equal(got, np.asarray(want)[:, 1:])
  assert (got < c.model.text.vocab_size).all()
