"""The Gemma-style decoder (vlx/models/gemma.py, issue 21): logits equal Hugging Face's
GemmaForCausalLM (multi-query and grouped-query, every weight perturbed so that the norms'
`1 + scale` and the heads' sharing matter), and the KV cache reproduces the full forward pass
under a prefix-LM mask (the prefix written at once, then one token at a time)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vlx.convert import hf_gemma
from vlx.models.gemma import GemmaDecoder
from vlx.models.masks import attention_mask, prefix_lm_mask_ar


def _hf_gemma(num_kv_heads: int):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  torch.manual_seed(0)
  cfg = transformers.GemmaConfig(
      vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
      num_attention_heads=4, num_key_value_heads=num_kv_heads, head_dim=8,
      max_position_embeddings=64, hidden_activation="gelu_pytorch_tanh", rope_theta=10_000.0)
  model = transformers.GemmaForCausalLM(cfg).eval()
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.05 * torch.randn_like(p))
  return torch, cfg, model


@pytest.mark.parametrize("num_kv_heads", [1, 2])  # multi-query, grouped-query
def test_logits_equal_hugging_face_gemma(num_kv_heads):
  torch, cfg, hf = _hf_gemma(num_kv_heads)
  fields, params = hf_gemma.import_state(cfg.to_dict(), hf.state_dict())
  ids = np.random.default_rng(0).integers(0, 96, (2, 11))
  with torch.no_grad():
    want = hf(torch.tensor(ids)).logits.numpy()
  model = GemmaDecoder(**fields)
  positions = jnp.broadcast_to(jnp.arange(11), (2, 11))
  mask = attention_mask(jnp.ones((2, 11), jnp.int32))   # causal

  def logits(p):
    x = model.apply({"params": p}, jnp.asarray(ids), method="embed")
    h = model.apply({"params": p}, x, positions, mask)
    return model.apply({"params": p}, h, method="logits")
  got = np.asarray(jax.jit(logits)(params))
  assert np.abs(want).max() > 1.0
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_kv_cache_matches_the_full_pass_under_a_prefix_lm_mask():
  fields = dict(vocab_size=50, width=32, depth=2, num_heads=4, num_kv_heads=2, head_dim=8,
                mlp_dim=48)
  model, cached = GemmaDecoder(**fields), GemmaDecoder(**fields, decode=True)
  b, length, prefix = 2, 9, 4
  ids = jnp.asarray(np.random.default_rng(1).integers(0, 50, (b, length)))
  positions = jnp.broadcast_to(jnp.arange(length), (b, length))
  mask = attention_mask(jnp.broadcast_to(prefix_lm_mask_ar(prefix, length), (b, length)))
  x = jnp.zeros((b, length, 32))
  variables = model.init(jax.random.key(0), x, positions, mask)
  params = jax.tree.map(lambda v: v + 0.05 * jax.random.normal(jax.random.key(2), v.shape),
                        variables["params"])
  emb = model.apply({"params": params}, ids, method="embed")
  full = model.apply({"params": params}, emb, positions, mask)

  cache = cached.init(jax.random.key(0), x, positions, mask)["cache"]
  step = jax.jit(lambda c, e, pos, m: cached.apply({"params": params, "cache": c}, e, pos, m,
                                                    mutable=["cache"]))
  out, mutated = step(cache, emb[:, :prefix], positions[:, :prefix], mask[:, :, :prefix])
  pieces, cache = [out], mutated["cache"]
  for t in range(prefix, length):
    out, mutated = step(cache, emb[:, t:t + 1], positions[:, t:t + 1], mask[:, :, t:t + 1])
    pieces.append(out)
    cache = mutated["cache"]
  np.testing.assert_allclose(np.concatenate(pieces, axis=1), full, atol=1e-5, rtol=0)
  # The prefix really is bidirectional: its first position reads the last prefix token.
  moved = emb.at[:, prefix - 1].add(1.0)
  again = model.apply({"params": params}, moved, positions, mask)
  assert float(jnp.abs(again[:, 0] - full[:, 0]).max()) > 1e-4


def test_an_untied_head_or_another_activation_is_refused():
  torch, cfg, hf = _hf_gemma(1)
  state = dict(hf.state_dict())
  state["lm_head.weight"] = state["lm_head.weight"] + 1
  with pytest.raises(hf_gemma.M.ConversionError, match="ties them"):
    hf_gemma.import_state(cfg.to_dict(), state)
  with pytest.raises(hf_gemma.M.ConversionError, match="hidden_activation 'relu'"):
    hf_gemma.decoder_fields(dict(cfg.to_dict(), hidden_activation="relu"))


def test_every_parameter_has_logical_axis_names():
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  model = GemmaDecoder(vocab_size=50, width=32, depth=1, num_heads=4, num_kv_heads=1,
                       head_dim=8, mlp_dim=48)
  x, pos = jnp.zeros((1, 3, 32)), jnp.zeros((1, 3), jnp.int32)
  boxed = jax.eval_shape(lambda: model.init(jax.random.key(0), x, pos, None))["params"]
  leaves = jax.tree.leaves(boxed, is_leaf=lambda v: isinstance(v, nn.LogicallyPartitioned))
  assert len(leaves) == 1 + 1 + 2 + 4 + 3   # embedding, final norm, 2 norms, q/k/v/o, MLP
  for leaf in leaves:
    assert isinstance(leaf, nn.LogicallyPartitioned), leaf
    assert len(leaf.names) == leaf.value.ndim and any(n is not None for n in leaf.names)


def test_decoder_fields_read_transformers_5_config_names():
  """transformers 5 writes `hidden_act` and `rope_parameters`; an activation the decoder does
  not have is refused, not replaced by the default."""
  from vlx.convert import hf_gemma  # pylint: disable=g-import-not-at-top
  from vlx.convert.mapping import ConversionError  # pylint: disable=g-import-not-at-top
  base = dict(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
              intermediate_size=16)
  assert hf_gemma.decoder_fields(dict(base, rope_parameters={"rope_theta": 5e3}))[
      "rope_theta"] == 5e3
  assert hf_gemma.decoder_fields(dict(base, hidden_act="gelu"))["depth"] == 1
  with pytest.raises(ConversionError, match="relu"):
    hf_gemma.decoder_fields(dict(base, hidden_act="relu"))
