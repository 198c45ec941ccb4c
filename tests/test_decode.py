"""Decoding (vlx/decode.py) and the captioning loss, on a small random CoCa.

* KV-cached decoding equals uncached decoding token for token (greedy, beam, sampling),
  on one device and on an 8-device 2x2x2 mesh;
* a beam of one is greedy; beam search never finds a worse sequence than greedy;
* sampling is deterministic per rng, and top-k = 1 sampling is greedy;
* the captioning loss ignores padding.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from vlx import config_lib, decode
from vlx.evals.common import EvalContext, run_batched
from vlx.objectives.captioning import caption_loss
from vlx.parallel import mesh as mesh_lib
from vlx import build
from vlx_testlib import REPO

EOS = 2
MAX_LEN = 10


@pytest.fixture(scope="module")
def coca():
  config = config_lib.load_config_file(f"{REPO}/configs/coca.py:smoke")
  config_lib.apply_overrides(config, [(k, str(v)) for k, v in {
      "model.image.depth": 1, "model.image.width": 32, "model.image.num_heads": 2,
      "model.text.unimodal_depth": 1, "model.text.multimodal_depth": 2,
      "model.text.width": 32, "model.text.num_heads": 2, "model.text.vocab_size": 40,
      "model.caption_queries": 4, "model.embed_dim": 16, "data.image_size": 16,
      "model.image.stem": "patch", "model.image.patch_size": 8}.items()])
  model = build.build_model(config)
  dummy = {k: v[:1] for k, v in build.dummy_batch(config).items()}
  params = mesh_lib.unbox(model.init(jax.random.key(0), dummy)["params"])
  # A raised EOS logit makes this random model end its captions at varied lengths (3..10).
  params["txt"]["head"]["bias"] = params["txt"]["head"]["bias"].at[EOS].set(2.0)
  images = np.random.default_rng(0).uniform(-1, 1, (16, 16, 16, 3)).astype(np.float32)
  return model, params, images


def _generate(model, params, images, rng=None, mesh=None, **cfg):
  fn = decode.make_generate_fn(model, decode.DecodeConfig(max_len=MAX_LEN, **cfg), EOS, EOS)
  rng = jax.random.key(0) if rng is None else rng
  if mesh is None:
    return np.asarray(jax.jit(fn)(params, images, rng))
  ctx = EvalContext(model=model, mesh=mesh, handle=None, data_config=None, batch_size=16)
  return run_batched(ctx, ("test", tuple(sorted(cfg.items())), str(rng)),
                     lambda p, x: fn(p, x, rng), params, images)


def _sequence_logprob(model, params, images, tokens):
  """Teacher-forced log-probability of each caption up to and including its EOS."""
  memory = model.apply({"params": params}, images, method="image_memory")
  inp = jnp.concatenate([jnp.full((tokens.shape[0], 1), EOS), tokens[:, :-1]], axis=1)
  logits = model.apply({"params": params}, inp, memory, method="decode_tokens")
  logits = logits.at[..., 0].set(-1e9)  # decoding never emits padding
  logp = jnp.take_along_axis(jax.nn.log_softmax(logits, -1), tokens[..., None], -1)[..., 0]
  return np.asarray(jnp.sum(logp * (tokens != 0), axis=1))


def _mesh(data, fsdp, tensor):
  return mesh_lib.make_mesh(ml_collections.ConfigDict(dict(data=data, fsdp=fsdp, tensor=tensor)),
                            devices=jax.devices()[:data * fsdp * tensor])


@pytest.mark.parametrize("method", ["greedy", "beam", "sample"])
def test_cached_equals_uncached_on_one_and_eight_devices(coca, method):
  model, params, images = coca
  kw = dict(method=method, beam_size=3, top_k=8, top_p=0.9, temperature=1.3)
  cached = _generate(model, params, images, use_cache=True, **kw)
  uncached = _generate(model, params, images, use_cache=False, **kw)
  np.testing.assert_array_equal(cached, uncached)
  sharded = _generate(model, params, images, mesh=_mesh(2, 2, 2), use_cache=True, **kw)
  np.testing.assert_array_equal(sharded, cached)
  # Not vacuous: real tokens, and captions of different lengths.
  lengths = (cached != 0).sum(1)
  assert lengths.max() > 1 and len(set(lengths.tolist())) > 1, cached
  # EOS ends a caption: nothing but padding after it.
  for row in cached:
    if EOS in row.tolist():
      assert not row[row.tolist().index(EOS) + 1:].any(), row


def test_beam_of_one_is_greedy_and_wider_beams_score_at_least_as_well(coca):
  model, params, images = coca
  greedy = _generate(model, params, images, method="greedy")
  np.testing.assert_array_equal(
      _generate(model, params, images, method="beam", beam_size=1, length_penalty=0.6), greedy)
  beam = _generate(model, params, images, method="beam", beam_size=4, length_penalty=0.0)
  lp_greedy = _sequence_logprob(model, params, images, greedy)
  lp_beam = _sequence_logprob(model, params, images, beam)
  assert np.all(lp_beam >= lp_greedy - 1e-4), (lp_beam, lp_greedy)
  assert np.any(lp_beam > lp_greedy + 1e-3)  # the search found something greedy missed


def test_sampling_is_deterministic_per_rng_and_top_k_one_is_greedy(coca):
  model, params, images = coca
  a = _generate(model, params, images, method="sample", rng=jax.random.key(1))
  b = _generate(model, params, images, method="sample", rng=jax.random.key(1))
  c = _generate(model, params, images, method="sample", rng=jax.random.key(2))
  np.testing.assert_array_equal(a, b)
  assert (a != c).any()
  np.testing.assert_array_equal(
      _generate(model, params, images, method="sample", top_k=1, rng=jax.random.key(3)),
      _generate(model, params, images, method="greedy"))


def test_filter_logits_top_k_and_top_p():
  logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
  kept = lambda x: (np.asarray(x) > -1e8).astype(int).tolist()  # noqa: E731
  assert kept(decode.filter_logits(logits, top_k=2)) == [[1, 1, 0, 0]]
  assert kept(decode.filter_logits(logits, top_p=0.7)) == [[1, 1, 0, 0]]   # 0.5 + 0.3 >= 0.7
  assert kept(decode.filter_logits(logits, top_p=0.85)) == [[1, 1, 1, 0]]
  assert kept(decode.filter_logits(logits, top_p=0.1)) == [[1, 0, 0, 0]]   # top token stays
  np.testing.assert_allclose(decode.filter_logits(logits, temperature=2.0), logits / 2.0)


def test_caption_loss_ignores_padding():
  rng = np.random.default_rng(0)
  targets = np.array([[5, 6, EOS, 0, 0], [7, EOS, 0, 0, 0]], np.int32)
  logits = rng.normal(size=(2, 5, 9)).astype(np.float32)
  loss, acc, count = caption_loss(jnp.asarray(logits), jnp.asarray(targets))
  scrambled = logits.copy()
  scrambled[targets == 0] = rng.normal(size=(int((targets == 0).sum()), 9)) * 100
  loss2, acc2, _ = caption_loss(jnp.asarray(scrambled), jnp.asarray(targets))
  assert int(count) == 5
  np.testing.assert_allclose(loss2, loss, rtol=1e-6)
  np.testing.assert_allclose(acc2, acc)
  # Equal to the mean negative log-likelihood over the 5 real tokens.
  logp = jax.nn.log_softmax(logits, -1)
  nll = [-logp[b, t, targets[b, t]] for b in range(2) for t in range(5) if targets[b, t]]
  np.testing.assert_allclose(loss, np.mean(nll), rtol=1e-5)
  # Label smoothing moves the loss (it is applied, and still only on real tokens).
  smoothed, _, _ = caption_loss(jnp.asarray(logits), jnp.asarray(targets), 0.1)
  smoothed2, _, _ = caption_loss(jnp.asarray(scrambled), jnp.asarray(targets), 0.1)
  assert abs(float(smoothed) - float(loss)) > 1e-4
  np.testing.assert_allclose(smoothed2, smoothed, rtol=1e-6)
