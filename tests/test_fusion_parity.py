"""Hugging Face LXMERT / VisualBERT weights in vlx's fusion stacks: numerical parity.

Small random HF models are built here with torch on CPU (every parameter perturbed, layer
norms included, so no mis-mapped tensor hides behind an initializer's zeros or ones), run
in fp32 eval mode on inputs with padding in both masks, converted with
vlx/convert/hf_fusion.py (from the state dict and from a `save_pretrained` directory of the
pre-training class, whose heads the import drops) and compared within ATOL: 5e-6, from the
largest difference measured over five random models and inputs (seeds 0-4), 1.4e-6 (LXMERT's
language_output; VisualBERT's last_hidden_state 1.2e-6, the pooled outputs 3e-7), with
margin for other CPUs' float32 summation orders.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="parity tests need torch: pip install -e '.[torch]'")
transformers = pytest.importorskip("transformers", reason="parity tests need transformers")

from vlx.convert import hf, hf_fusion, mapping  # noqa: E402

ATOL = 5e-6
B, L, R, FEAT = 2, 7, 5, 24
SMALL = dict(vocab_size=100, hidden_size=32, num_attention_heads=2, intermediate_size=64,
             max_position_embeddings=16, hidden_dropout_prob=0.0,
             attention_probs_dropout_prob=0.0)


def _randomize(module, seed=0, std=0.05):
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for p in module.parameters():
      p.add_(torch.randn(p.shape, generator=g) * std)


def _inputs(seed=0):
  """Token ids, segment ids and masks with padding (text: row 1; visual: row 0), features."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(1, SMALL["vocab_size"], (B, L))
  t_mask = np.ones((B, L), np.int64)
  t_mask[1, -3:] = 0
  ids = np.where(t_mask == 1, ids, 0)
  types = np.zeros((B, L), np.int64)
  types[:, 4:] = 1
  v_mask = np.ones((B, R), np.int64)
  v_mask[0, -2:] = 0
  feats = rng.normal(size=(B, R, FEAT)).astype(np.float32)
  xy0 = rng.uniform(0, 0.5, (B, R, 2))
  boxes = np.concatenate([xy0, xy0 + rng.uniform(0.1, 0.5, (B, R, 2))], -1).astype(np.float32)
  return ids, types, t_mask, feats, boxes, v_mask


def _vlx_forward(imported, ids, types, t_mask, feats, geometry, v_mask):
  model = hf_fusion.FusionEncoder(imported.stack, imported.fusion)
  params = jax.tree.map(jnp.asarray, imported.params)
  fn = jax.jit(lambda p, *a: model.apply({"params": p}, *a))
  return fn(params, jnp.asarray(ids, jnp.int32), jnp.asarray(types, jnp.int32),
            jnp.asarray(t_mask, bool), jnp.asarray(feats),
            None if geometry is None else jnp.asarray(geometry), jnp.asarray(v_mask, bool))


def _max_diff(a, b):
  return float(np.max(np.abs(np.asarray(a, np.float64) - b.detach().numpy())))


def _check_dir_import(pretraining, tmp_path, imported):
  """The pre-training class's save_pretrained directory (prefixed keys + heads) imports to
  the same params; export gives the base model's state dict back."""
  pretraining.save_pretrained(tmp_path)
  from_dir = hf_fusion.import_dir(str(tmp_path))
  assert from_dir.stack == imported.stack and from_dir.fusion == imported.fusion
  a, b = mapping.flatten(from_dir.params), mapping.flatten(imported.params)
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  base = getattr(pretraining, pretraining.base_model_prefix).state_dict()
  exported = hf_fusion.export_state(from_dir)
  assert exported.keys() == {k for k in base if not hf.is_buffer(k)}
  for k, v in exported.items():
    np.testing.assert_array_equal(v, base[k].numpy(), err_msg=k)


def test_lxmert_parity(tmp_path):
  cfg = transformers.LxmertConfig(**SMALL, l_layers=2, r_layers=1, x_layers=2,
                                  visual_feat_dim=FEAT, visual_pos_dim=4, num_qa_labels=3,
                                  num_object_labels=5, num_attr_labels=4)
  torch.manual_seed(0)
  pretraining = transformers.LxmertForPreTraining(cfg).eval()
  _randomize(pretraining)
  hf_model = pretraining.lxmert
  ids, types, t_mask, feats, boxes, v_mask = _inputs()
  with torch.no_grad():
    ref = hf_model(input_ids=torch.from_numpy(ids), token_type_ids=torch.from_numpy(types),
                   attention_mask=torch.from_numpy(t_mask), visual_feats=torch.from_numpy(feats),
                   visual_pos=torch.from_numpy(boxes),
                   visual_attention_mask=torch.from_numpy(v_mask))

  imported = hf_fusion.import_state(cfg.to_dict(), hf_model.state_dict())
  assert imported.stack == "lxmert"
  f = imported.fusion
  assert (f["text_depth"], f["visual_depth"], f["fusion_depth"]) == (2, 1, 2)
  assert (f["width"], f["num_heads"], f["mlp_dim"], f["vocab_size"]) == (32, 2, 64, 100)
  assert (f["act"], f["ln_eps"], imported.facts["visual_dim"]) == ("gelu", 1e-12, FEAT)
  out = _vlx_forward(imported, ids, types, t_mask, feats, boxes, v_mask)
  diffs = {"language_output": _max_diff(out["text"], ref.language_output),
           "vision_output": _max_diff(out["visual"], ref.vision_output),
           "pooled_output": _max_diff(out["pooled"], ref.pooled_output)}
  print("lxmert max abs diff:", diffs)
  assert max(diffs.values()) <= ATOL, diffs

  _check_dir_import(pretraining, tmp_path, imported)


def test_visual_bert_parity(tmp_path):
  cfg = transformers.VisualBertConfig(**SMALL, num_hidden_layers=2, visual_embedding_dim=FEAT)
  torch.manual_seed(0)
  pretraining = transformers.VisualBertForPreTraining(cfg).eval()
  _randomize(pretraining)
  hf_model = pretraining.visual_bert
  ids, types, t_mask, feats, _, v_mask = _inputs(1)
  with torch.no_grad():
    ref = hf_model(input_ids=torch.from_numpy(ids), token_type_ids=torch.from_numpy(types),
                   attention_mask=torch.from_numpy(t_mask), visual_embeds=torch.from_numpy(feats),
                   visual_attention_mask=torch.from_numpy(v_mask))

  imported = hf_fusion.import_state(cfg.to_dict(), hf_model.state_dict())
  assert imported.stack == "single_stream" and imported.fusion["box_embed"] is False
  assert imported.fusion["text_depth"] == 2 and imported.facts["visual_dim"] == FEAT
  out = _vlx_forward(imported, ids, types, t_mask, feats, None, v_mask)
  diffs = {"last_hidden_state[text]": _max_diff(out["text"], ref.last_hidden_state[:, :L]),
           "last_hidden_state[visual]": _max_diff(out["visual"], ref.last_hidden_state[:, L:]),
           "pooler_output": _max_diff(out["pooled"], ref.pooler_output)}
  print("visual_bert max abs diff:", diffs)
  assert max(diffs.values()) <= ATOL, diffs

  _check_dir_import(pretraining, tmp_path, imported)


def test_unsupported_configs_fail_clearly():
  with pytest.raises(mapping.ConversionError, match="bypass_transformer"):
    hf_fusion.model_config(dict(model_type="visual_bert", bypass_transformer=True))
  with pytest.raises(mapping.ConversionError, match="model_type"):
    hf_fusion.model_config(dict(model_type="bert"))
  with pytest.raises(mapping.ConversionError, match="hidden_act"):
    hf_fusion.model_config(dict(model_type="lxmert", hidden_act="silu"))
