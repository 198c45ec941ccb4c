"""Fine-tuning the training model (FusionModel, lxmert stack) from an imported Hugging Face
LXMERT: `python -m vlx.convert --src=HF --out=DIR`, then `configs/lxmert.py:ft=DIR`.

A small random `LxmertForPreTraining` is built here (no download). Checked: FusionModel, as
the ft config builds it and the trainer initialises it (`load_params` with the fresh init for
what the checkpoint lacks), gives LXMERT's language / vision / pooled outputs on the same
ids, region features and boxes (parity of the training model, not of a test wrapper); and
`python -m vlx.main` trains it two steps through the one train step, starting from those
weights.
"""

import json
import math
import os
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vlx_testlib import (PYTHON, REPO, no_evals, read_metrics, run_main,  # noqa: F401
                         shapes_data_dir, subprocess_env)

torch = pytest.importorskip("torch", reason="parity tests need torch: pip install -e '.[torch]'")
transformers = pytest.importorskip("transformers", reason="parity tests need transformers")

from test_fusion_parity import ATOL, _randomize  # noqa: E402
from vlx import config_lib  # noqa: E402
from vlx.families.fusion.layers import box_geometry  # noqa: E402
from vlx import build  # noqa: E402
from vlx.train import checkpoint  # noqa: E402

B, L, R = 2, 7, 5
VOCAB = 300          # >= the synthetic scenes' tokenizer (256 ids)
IMAGE_WIDTH = 16     # the ft config's ViT width: region features are 2*2*16 = 64 wide
HF = dict(vocab_size=VOCAB, hidden_size=32, num_attention_heads=2, intermediate_size=64,
          max_position_embeddings=40, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
          l_layers=2, r_layers=1, x_layers=1, visual_feat_dim=4 * IMAGE_WIDTH, visual_pos_dim=4,
          num_qa_labels=3, num_object_labels=5, num_attr_labels=4)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
  """(HF LxmertModel in eval mode, converted directory) via `python -m vlx.convert`."""
  root = tmp_path_factory.mktemp("lxmert_ft")
  torch.manual_seed(0)
  pretraining = transformers.LxmertForPreTraining(transformers.LxmertConfig(**HF)).eval()
  _randomize(pretraining)
  pretraining.save_pretrained(root / "hf")
  proc = subprocess.run([PYTHON, "-m", "vlx.convert", f"--src={root / 'hf'}",
                         f"--out={root / 'vlx'}"], cwd=REPO, env=subprocess_env(1),
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "configs/lxmert.py:ft=" in proc.stdout, proc.stdout
  return pretraining.lxmert, str(root / "vlx")


def _inputs(model_vocab):
  """HF inputs ([CLS] first, a [MASK], padding in both masks) and the same for FusionModel,
  whose [CLS] / [MASK] are the ids after its text vocabulary, and whose boxes are
  (y0, x0, y1, x1)."""
  rng = np.random.default_rng(0)
  ids = rng.integers(110, VOCAB, (B, L))
  ids[:, 0], ids[:, 3] = 101, 103
  t_mask = np.ones((B, L), np.int64)
  t_mask[1, -3:] = 0
  ids = np.where(t_mask == 1, ids, 0)
  types = np.zeros((B, L), np.int64)
  v_mask = np.ones((B, R), np.int64)
  v_mask[0, -2:] = 0
  feats = rng.normal(size=(B, R, 4 * IMAGE_WIDTH)).astype(np.float32)
  xy0 = rng.uniform(0, 0.5, (B, R, 2))
  boxes = np.concatenate([xy0, xy0 + rng.uniform(0.1, 0.5, (B, R, 2))], -1).astype(np.float32)
  vlx_ids = np.where(ids == 101, model_vocab, np.where(ids == 103, model_vocab + 1, ids))
  return (ids, types, t_mask, feats, boxes, v_mask), (vlx_ids, boxes[..., [1, 0, 3, 2]])


def _fused_from_features(m, ids, types, t_mask, feats, geometry, v_mask):
  """FusionModel's own stack and pooler, from region features (FusionModel.visual_inputs
  makes them from the ViT; here they are LXMERT's inputs)."""
  t_emb = m.body.embed_text(ids, types)
  v_emb = m.body.embed_visual(feats, geometry)
  t = (t_emb, m.body.encode_text(t_emb, t_mask), t_mask)
  v = (v_emb, m.body.encode_visual(v_emb, v_mask), v_mask)
  return m.fused(t, v)


def test_training_model_initialised_from_lxmert_matches_it(converted):
  hf_model, out_dir = converted
  config = config_lib.load_config_file(f"{REPO}/configs/lxmert.py:ft={out_dir},smoke")
  assert config.init_from == out_dir and config.model.stack == "lxmert"
  model = build.build_model(config)
  (ids, types, t_mask, feats, boxes, v_mask), (vlx_ids, vlx_boxes) = _inputs(VOCAB)
  args = (jnp.asarray(vlx_ids, jnp.int32), jnp.asarray(types, jnp.int32),
          jnp.asarray(t_mask, bool), jnp.asarray(feats),
          box_geometry(jnp.asarray(vlx_boxes)), jnp.asarray(v_mask, bool))
  fresh = jax.jit(lambda: model.init(jax.random.key(1), *args,
                                     method=_fused_from_features)["params"])()
  fresh = jax.tree.map(lambda x: getattr(x, "value", x), fresh,
                       is_leaf=lambda x: hasattr(x, "value"))
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), fresh)
  params = checkpoint.load_params(out_dir, abstract, fresh=fresh)  # the trainer's init_from
  t_f, v_f, pooled = jax.jit(lambda p: model.apply({"params": p}, *args,
                                                  method=_fused_from_features))(params)
  with torch.no_grad():
    ref = hf_model(input_ids=torch.from_numpy(ids), token_type_ids=torch.from_numpy(types),
                   attention_mask=torch.from_numpy(t_mask), visual_feats=torch.from_numpy(feats),
                   visual_pos=torch.from_numpy(boxes),
                   visual_attention_mask=torch.from_numpy(v_mask))
  diffs = {name: float(np.max(np.abs(np.asarray(a, np.float64) - b.numpy())))
           for name, a, b in (("language_output", t_f, ref.language_output),
                              ("vision_output", v_f, ref.vision_output),
                              ("pooled_output", pooled, ref.pooled_output))}
  print("FusionModel (training) vs LxmertModel max abs diff:", diffs)
  assert max(diffs.values()) <= ATOL, diffs


def test_finetune_from_lxmert_through_the_train_step(converted, shapes_data_dir, tmp_path):
  _, out_dir = converted
  workdir = tmp_path / "ft"
  # The import holds the fusion stack and pooler, not the ViT whose features the regions are
  # pooled from (one ViT layer: the config has 4), nor any task head (vlx's heads start
  # fresh: vlx/convert/hf_fusion.py). VQA alone runs the whole imported stack and the pooler
  # (three fused passes per image) through the one train step; the recipe's other five tasks
  # would more than double the step's compile time and read no other imported weight. Every
  # task of the LXMERT step, on one device and on eight, is test_fusion.py's.
  run_main("lxmert", workdir, shapes_data_dir, "--config.total_steps=2",
           "--config.checkpoint_every=2", "--config.log_every=1", *no_evals(),
           "--config.model.image.depth=1", "--config.model.tasks=('vqa',)",
           "--config.objectives={'vqa': {'weight': 1.0}}",
           variant=f"ft={out_dir},smoke", timeout=600)
  rows = [r for r in read_metrics(workdir) if "train/loss" in r]
  losses = [r["train/loss"] for r in rows]
  assert len(losses) == 2 and all(math.isfinite(x) for x in losses), losses
  assert all(math.isfinite(r["train/vqa/loss"]) for r in rows), rows
  with open(workdir / "config.json") as f:
    assert json.load(f)["init_from"] == out_dir
  # The run started from the import: two Adam steps (lr <= 1e-3) leave the imported
  # language encoder within a few 1e-3 of it (a random init differs from it by ~0.1).
  # Compare one tensor of the tuned checkpoint with the converted one.
  key = ("stack", "text_encoder")
  loaded = []
  for d in (out_dir, str(workdir)):
    mngr = checkpoint.ocp.CheckpointManager(os.path.join(d, "checkpoints"))
    tree = mngr.restore(mngr.latest_step(), args=checkpoint.ocp.args.Composite(
        state=checkpoint.ocp.args.PyTreeRestore()))["state"]["params"]
    mngr.close()
    loaded.append(tree[key[0]][key[1]])
  a, b = (jax.tree.leaves(t) for t in loaded)
  assert len(a) == len(b) > 0
  drift = max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(a, b))
  assert drift < 0.01, drift
