"""Real-data readers on small data the tests write (no network, no JAX).

VQA v2: the official questions/annotations JSON layout and COCO file names, three tiny
JPEGs. RefCOCO: TFDS's own `ref_coco` builder prepares a tiny manual download (refcoco.json +
coco_train2014/) as ArrayRecord, read back by name through `tfds.data_source`.
"""

import importlib.util
import io
import json
import os
import warnings

import numpy as np
import pytest
from PIL import Image

from vlx import registry
from vlx.data import pipeline, pp_ops, ref_coco, vqa_v2


def _jpeg(path, size=(24, 16), value=128):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path, format="JPEG")


# ---- VQA v2 ------------------------------------------------------------------------------

def _question(qid, image_id, question, answers, mc, atype="other"):
  q = {"image_id": image_id, "question": question, "question_id": qid}
  a = {"question_id": qid, "image_id": image_id, "multiple_choice_answer": mc,
       "answer_type": atype, "question_type": question.split()[0].lower(),
       "answers": [{"answer": x, "answer_confidence": "yes", "answer_id": i + 1}
                   for i, x in enumerate(answers)]}
  return q, a


TRAIN = [  # consensus answers normalize to 2, yes, red, yes, 2, zebra: vocabulary(3) = 2, yes, red
    _question(10, 1, "How many dogs are there?", ["Two"] * 4 + ["2"] * 3 + ["two."] + ["3"] * 2,
              "2", "number"),
    _question(11, 1, "Is it sunny?", ["yes"] * 9 + ["no"], "yes", "yes/no"),
    _question(12, 2, "What color is the car?", ["Red"] * 5 + ["red!"] + ["maroon"]
              + ["dark red"] * 3, "red"),
    _question(13, 2, "Is the car parked?", ["Yes"] * 10, "yes", "yes/no"),
    _question(14, 1, "How many tails?", ["two"] * 10, "Two", "number"),
    _question(15, 2, "What animal is this?", ["zebra"] * 10, "zebra"),  # outside the vocabulary
]
VAL = [
    _question(20, 3, "How many cars are there?", ["2"] * 2 + ["1"] * 8, "1", "number"),
    _question(21, 4, "Is it night?", ["no"] * 10, "no", "yes/no"),  # its image file is missing
]


@pytest.fixture()
def vqa_root(tmp_path):
  root = tmp_path / "vqa"
  for split, tag, rows in (("train", "train2014", TRAIN), ("val", "val2014", VAL)):
    qfile, afile, _ = vqa_v2.SPLITS[split]
    (root / tag).mkdir(parents=True)
    (root / qfile).write_text(json.dumps({"questions": [q for q, _ in rows]}))
    (root / afile).write_text(json.dumps({"annotations": [a for _, a in rows]}))
  _jpeg(str(root / "train2014" / "COCO_train2014_000000000001.jpg"), value=60)
  _jpeg(str(root / "train2014" / "COCO_train2014_000000000002.jpg"), value=120)
  _jpeg(str(root / "val2014" / "COCO_val2014_000000000003.jpg"), value=180)
  # test-dev: questions only, images in test2015/.
  (root / vqa_v2.SPLITS["test-dev"][0]).write_text(json.dumps(
      {"questions": [{"image_id": 1, "question": "Is it sunny?", "question_id": 30}]}))
  _jpeg(str(root / "test2015" / "COCO_test2015_000000000001.jpg"))
  return root


def _vqa(root, **kw):
  return registry.DATASETS.get("vqa_v2")(root=str(root), num_answers=3, vocab_size=64, **kw)


def test_vqa_answer_normalization():
  norm = vqa_v2.normalize_answer
  assert norm("Two") == norm("2") == norm("two.") == norm(" TWO\n") == "2"
  assert norm("A dog!") == "dog" and norm("the Red one") == "red 1"
  assert norm("dont know") == "don't know" and norm("none") == "0"
  assert norm("2.5") == "2.5" and norm("1,000") == "1000"
  assert norm("red-white") == "red white" and norm("yes, sir") == "yes sir"


def test_vqa_records_vocabulary_and_cache(vqa_root):
  handle = _vqa(vqa_root)
  assert sorted(handle.splits) == ["test-dev", "train", "val"]
  train = handle.split("train")
  assert len(train) == 6 and len(handle.split("val")) == 2
  rec = train[0]
  image = np.asarray(Image.open(io.BytesIO(rec["image"])))
  assert image.shape == (16, 24, 3) and abs(int(image.mean()) - 60) <= 2
  assert rec["captions"] == ["How many dogs are there?"] == [rec["question_text"]]
  assert rec["question_id"] == 10 and rec["image_id"] == 1 and rec["answer_type"] == "number"
  assert rec["answers"] == ["2"] * 8 + ["3"] * 2  # normalized, in the annotators' order
  assert train[2]["answers"] == ["red"] * 6 + ["maroon"] + ["dark red"] * 3
  assert handle.split("test-dev")[0]["answers"] == []

  # The 3 most frequent consensus answers ("2" and "Two" are one answer), ties alphabetical.
  assert handle.answer_vocab == ["2", "yes", "red"]
  cached = vqa_root / "vqa_v2_answers_3.json"
  assert json.loads(cached.read_text())["answers"] == ["2", "yes", "red"]
  assert (vqa_root / "spm_bpe_64.model").exists()
  # Reused, not rebuilt: an edited file is what the next load reads.
  cached.write_text(json.dumps({"answers": ["red", "yes", "2"]}))
  assert _vqa(vqa_root).answer_vocab == ["red", "yes", "2"]
  # Derived files can go elsewhere (a read-only data directory).
  other = vqa_root.parent / "cache"
  other.mkdir()
  assert _vqa(vqa_root, cache_dir=str(other)).answer_vocab == ["2", "yes", "red"]
  assert (other / "vqa_v2_answers_3.json").exists() and (other / "spm_bpe_64.model").exists()


def test_vqa_pp_op_outputs_and_soft_scores(vqa_root):
  handle = _vqa(vqa_root)
  fn = pp_ops.parse("decode|vqa_v2(16)", handle)
  rng = np.random.default_rng(0)
  ex = fn(handle.split("train")[0], rng)
  assert ex["image"].shape == (16, 24, 3) and ex["image"].dtype == np.uint8
  assert ex["question"].shape == (16,) and ex["question"].dtype == np.int32
  assert ex["answer"].dtype == np.int32 and ex["answer"].shape == ()
  assert ex["answer_scores"].shape == (3,) and ex["answer_scores"].dtype == np.float32
  assert ex["question_string"] == "How many dogs are there?"
  assert handle.tokenizer.decode(ex["question"][None])[0] == ex["question_string"]
  assert ex["answer_type"] == "number"
  # "Two" x4 + "2" x3 + "two." x1 -> "2" by 8 annotators (score 1); "3" is not in the vocabulary.
  assert ex["answer"] == 0 and ex["answer_scores"].tolist() == [1.0, 0.0, 0.0]

  def targets(split, i):
    out = fn(handle.split(split)[i], rng)
    return int(out["answer"]), out["answer_scores"]

  assert targets("train", 2)[0] == 2 and targets("train", 2)[1].tolist() == [0, 0, 1]
  # Only the rare answer: no class, all-zero scores.
  answer, scores = targets("train", 5)
  assert answer == -1 and not scores.any()
  # 2 of 10 annotators said "2" (the 8 who said "1" are outside the vocabulary): score 2/3.
  answer, scores = targets("val", 0)
  assert answer == 0 and np.allclose(scores, [2 / 3, 0, 0])
  # Questions without annotations (test-dev) still preprocess.
  answer, scores = targets("test-dev", 0)
  assert answer == -1 and not scores.any()

  spec = pipeline.example_spec(handle, "train", "decode|resize(8)|value_range(-1,1)|vqa_v2(16)",
                               ("image", "question", "answer", "answer_scores"))
  assert spec == {"image": ((8, 8, 3), np.float32), "question": ((16,), np.int32),
                  "answer": ((), np.int32), "answer_scores": ((3,), np.float32)}


def test_vqa_missing_image_is_skipped_and_counted(vqa_root):
  handle = _vqa(vqa_root)
  val = handle.split("val")
  assert val[1]["image"] is None  # reading the record itself does not fail
  with pytest.raises(pp_ops.CorruptRecord, match="COCO_val2014_000000000004.jpg"):
    pp_ops.parse("decode|vqa_v2(16)", handle)(val[1], np.random.default_rng(0))

  pp = "decode|resize(8)|value_range(-1,1)|first_caption|tokenize(16)|vqa_v2(16)"
  it = pipeline.TrainIterator(handle, "val", pp, 2, seed=0, num_threads=1, prefetch=1,
                              keys=("image", "text", "question", "answer_scores"))
  batch = next(it)
  assert batch["image"].shape == (2, 8, 8, 3) and batch["question"].shape == (2, 16)
  assert np.allclose(batch["answer_scores"], [[2 / 3, 0, 0]] * 2)  # only the readable question
  assert it.counter.count >= 1 and "COCO_val2014_000000000004.jpg" in it.counter.last_error
  out = pipeline.load_task_arrays(handle, "val", pp, ("question", "answer_scores"))
  assert out["skipped"] == 1 and out["question"].shape == (1, 16)


def test_vqa_missing_root_says_where_to_look(tmp_path):
  with pytest.raises(FileNotFoundError, match="data.source.root"):
    registry.DATASETS.get("vqa_v2")(root=str(tmp_path / "nowhere"))


# ---- RefCOCO through TFDS ----------------------------------------------------------------

W, H = 80, 40  # not square: x is normalized by the width, y by the height
# image id -> (split, [(x, y, w, h, category)], {object index: [expressions]})
REFCOCO = {
    1: ("train", [(8, 4, 16, 20, 1), (40, 0, 32, 40, 18), (0, 20, 80, 20, 3)],
        {0: ["man on left", "guy in red"], 2: ["the table"]}),
    2: ("train", [(0, 0, 40, 40, 5), (40, 0, 40, 40, 6), (10, 10, 4, 4, 7), (60, 30, 20, 10, 8),
                  (20, 20, 30, 15, 9)],
        {2: ["tiny thing in the corner"]}),  # the referred object is the smallest of five
    3: ("val", [(0, 0, 10, 10, 1), (10, 10, 20, 20, 2)], {1: ["right square"]}),
    4: ("testA", [(0, 0, 40, 40, 1)], {0: ["a person"]}),
    5: ("testB", [(5, 5, 30, 30, 4)], {0: ["a box"]}),
}


def _norm_box(x, y, w, h):
  return [y / H, x / W, (y + h) / H, (x + w) / W]


def _refcoco_manual_dir(path):
  """refcoco.json as TFDS's manual_download_process.py writes it, and coco_train2014/."""
  refs, coco, ref_id, sent_id = [], {}, 0, 0
  for image_id, (split, objects, referred) in REFCOCO.items():
    name = f"COCO_train2014_{image_id:012d}.jpg"
    _jpeg(str(path / "coco_train2014" / name), size=(W, H), value=40 * image_id)
    anns = [{"id": image_id * 100 + k, "image_id": image_id, "area": w * h,
             "bbox": [x, y, w, h], "category_id": c, "iscrowd": 0,
             "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]}
            for k, (x, y, w, h, c) in enumerate(objects)]
    coco[str(image_id)] = {"info": {"id": image_id, "file_name": name, "width": W, "height": H},
                           "anns": anns}
    for k, sentences in referred.items():
      ref_id += 1
      sents = []
      for s in sentences:
        sent_id += 1
        sents.append({"raw": s, "sent": s.lower(), "sent_id": sent_id, "tokens": s.split()})
      refs.append({"dataset": "refcoco", "dataset_partition": "unc", "split": split,
                   "image_id": image_id, "ref_id": ref_id, "ann_id": anns[k]["id"],
                   "category_id": anns[k]["category_id"], "ann": anns[k], "sentences": sents})
  (path / "refcoco.json").write_text(json.dumps({"ref": refs, "coco_anns": coco}))


@pytest.fixture(scope="module")
def refcoco_data_dir(tmp_path_factory):
  """`ref_coco/refcoco_unc` prepared by TFDS's own builder from a tiny manual download
  (its masks computed by pycocotools, which pycocoevalcap brings).

  Without TensorFlow, TFDS 4.9 fails at one line when it writes nested sequences (the
  expressions of each object): `TensorInfo(..., dtype=tensor_info.dtype)` in
  `example_serializer._add_ragged_fields`, where `.dtype` is the TF dtype, which the
  constructor turns straight back into the numpy one. Only there (checked: the one place
  `.dtype` is read while this builds) and only while it builds, `.dtype` answers the numpy
  dtype itself; the stored examples are the same.
  """
  from tensorflow_datasets.core.features import feature as feature_lib  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  base = tmp_path_factory.mktemp("refcoco")
  manual, data_dir = base / "manual", base / "tfds"
  _refcoco_manual_dir(manual)
  with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # pycocotools under numpy 2
    if importlib.util.find_spec("tensorflow") is None:
      mp.setattr(feature_lib.TensorInfo, "dtype", property(lambda self: self.np_dtype))
    tfds.builder("ref_coco/refcoco_unc", data_dir=str(data_dir)).download_and_prepare(
        file_format="array_record",
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
  return str(data_dir)


@pytest.fixture(scope="module")
def refcoco_handle(refcoco_data_dir):
  return registry.DATASETS.get("ref_coco")(config="refcoco_unc", data_dir=refcoco_data_dir,
                                           vocab_size=64)


def _expected(image_id):
  """expression -> (referred object's index, its normalized box), from the annotations."""
  _, objects, referred = REFCOCO[image_id]
  return {s: (k, _norm_box(*objects[k][:4])) for k, ss in referred.items() for s in ss}


def test_refcoco_records_by_tfds_name(refcoco_handle):
  handle = refcoco_handle
  assert sorted(handle.splits) == ["testA", "testB", "train", "validation"]
  train = handle.split("train")
  assert len(train) == 2 and len(handle.split("validation")) == 1
  for rec in train:
    image_id = int(rec["image_id"])
    _, objects, _ = REFCOCO[image_id]
    assert rec["image"].shape == (H, W, 3) and rec["image"].dtype == np.uint8
    # TFDS boxes are (ymin, xmin, ymax, xmax) normalized: the layout of vlx's grounding keys.
    assert np.allclose(rec["object_boxes"], [_norm_box(*o[:4]) for o in objects])
    assert rec["object_labels"].tolist() == [o[4] for o in objects]
    expected = _expected(image_id)
    assert sorted(rec["captions"]) == sorted(expected) == sorted(rec["refexps"].tolist())
    for expr, target, box in zip(rec["refexps"], rec["refexp_targets"], rec["refexp_boxes"]):
      assert target == expected[expr][0] and np.allclose(box, expected[expr][1])


def test_refcoco_refer_op(refcoco_handle):
  handle = refcoco_handle
  fn = pp_ops.parse("decode|refcoco_refer(16, 4)", handle)
  seen = set()
  for seed in range(12):
    for rec in handle.split("train"):
      image_id = int(rec["image_id"])
      ex = fn(rec, np.random.default_rng(seed))
      assert ex["expression"].shape == (16,) and ex["expression"].dtype == np.int32
      assert ex["boxes"].shape == (4, 4) and ex["boxes"].dtype == np.float32
      assert ex["box_mask"].dtype == np.bool_ and ex["box_labels"].dtype == np.int32
      assert ex["target"].dtype == np.int32 and ex["target_box"].shape == (4,)
      n = min(len(REFCOCO[image_id][1]), 4)
      assert ex["box_mask"].tolist() == [True] * n + [False] * (4 - n)
      assert (ex["box_labels"][n:] == -1).all() and (ex["boxes"][n:] == 0).all()
      t = int(ex["target"])
      assert 0 <= t < n and ex["box_mask"][t]
      k, box = _expected(image_id)[ex["expression_string"]]
      assert np.allclose(ex["target_box"], box) and np.allclose(ex["boxes"][t], box)
      assert ex["box_labels"][t] == REFCOCO[image_id][1][k][4]
      assert handle.tokenizer.decode(ex["expression"][None])[0] == ex["expression_string"]
      seen.add(ex["expression_string"])
  assert seen == set(_expected(1)) | set(_expected(2))  # every expression gets drawn
  # Five objects, four slots: the smallest (referred) one is kept, the next-smallest dropped.
  rec = [r for r in handle.split("train") if int(r["image_id"]) == 2][0]
  ex = fn(rec, np.random.default_rng(0))
  kept = [_norm_box(*o[:4]) for i, o in enumerate(REFCOCO[2][1]) if i != 3]
  assert np.allclose(ex["boxes"], kept) and int(ex["target"]) == 2

  jittered = pp_ops.parse("decode|refcoco_refer(16, 4, 0.2)", handle)(
      handle.split("train")[0], np.random.default_rng(0))
  t = int(jittered["target"])
  n = int(jittered["box_mask"].sum())
  assert not np.allclose(jittered["boxes"][:n], ex["boxes"][:n])
  assert ((jittered["boxes"] >= 0) & (jittered["boxes"] <= 1)).all()
  k, box = _expected(int(handle.split("train")[0]["image_id"]))[jittered["expression_string"]]
  assert np.allclose(jittered["target_box"], box)  # the annotated box, not the jittered one
  assert np.abs(jittered["boxes"][t] - box).max() > 0
  with pytest.raises(ValueError, match="jitter"):
    pp_ops.parse("decode|refcoco_refer(16, 4, 0.5)", handle)


def test_refcoco_through_the_pipeline(refcoco_handle):
  pp = "decode|resize(8)|value_range(-1,1)|sample_caption|tokenize(16)|refcoco_refer(16, 4)"
  it = pipeline.TrainIterator(refcoco_handle, "train", pp, 2, seed=0, num_threads=1,
                              prefetch=1, keys=("image", "text", "boxes", "box_mask",
                                                "box_labels", "target", "target_box",
                                                "expression"))
  batch = next(it)
  assert batch["image"].shape == (2, 8, 8, 3) and batch["boxes"].shape == (2, 4, 4)
  assert batch["target"].shape == (2,) and batch["box_mask"][np.arange(2), batch["target"]].all()
  assert it.counter.count == 0
  out = pipeline.load_task_arrays(refcoco_handle, "validation", pp, ("target", "target_box"))
  assert out["skipped"] == 0 and np.allclose(out["target_box"], [_norm_box(10, 10, 20, 20)])


def test_refcoco_unprepared_config_says_how(refcoco_data_dir):
  with pytest.raises(FileNotFoundError, match="refcocoplus_unc is not prepared"):
    ref_coco.ref_coco_dataset(config="refcoco+_unc", data_dir=refcoco_data_dir)
  with pytest.raises(ValueError, match="unknown config"):
    ref_coco.ref_coco_dataset(config="refcoco_xyz", data_dir=refcoco_data_dir)
