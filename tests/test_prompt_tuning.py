"""Deep prompt tuning (vlx/models/prompt_tuning.py) in a causal text tower with padded rows:
at init the tower is the one without prompts to 1e-6; with the gate open the prompts reach
every token and later tokens still reach no earlier one."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from vlx.models.text import TextTransformer

FIELDS = dict(vocab_size=50, max_len=8, width=32, depth=2, num_heads=2, causal=True)


def _tokens():
  tokens = np.random.default_rng(0).integers(3, 50, (3, 8)).astype(np.int32)
  tokens[0, 5], tokens[0, 6:] = 2, 0   # EOS, then padding
  tokens[1, 7] = 2
  tokens[2, 3], tokens[2, 4:] = 2, 0
  return tokens


def _prompted(scan=False):
  tower = TextTransformer(**FIELDS, prompts=4, scan=scan)
  params = nn.meta.unbox(tower.init(jax.random.key(0), _tokens())["params"])
  return tower, params


def _with(params, name, fn):
  return jax.tree_util.tree_map_with_path(
      lambda path, x: fn(x) if str(path[-1].key) == name else x, params)


@pytest.mark.parametrize("scan", [False, True])
def test_prompts_start_as_the_tower_without_them(scan):
  tower, params = _prompted(scan)
  strip = lambda tree: {k: (strip(v) if isinstance(v, dict) else v)  # noqa: E731
                        for k, v in tree.items() if not k.startswith("prompt_")}
  pooled, tokens = tower.apply({"params": params}, _tokens())
  want_pooled, want_tokens = TextTransformer(**FIELDS, scan=scan).apply(
      {"params": strip(params)}, _tokens())
  np.testing.assert_allclose(pooled, want_pooled, atol=1e-6)
  np.testing.assert_allclose(tokens, want_tokens, atol=1e-6)
  # The gate is what hides them: opened, the same prompts move every real token.
  opened = _with(params, "prompt_gate", np.ones_like)
  _, moved = tower.apply({"params": opened}, _tokens())
  real = _tokens() != 0
  assert float(np.abs(np.asarray(moved - want_tokens))[real].min()) > 1e-4


def test_open_prompts_keep_the_tower_causal():
  tower, params = _prompted()
  params = _with(params, "prompt_gate", np.ones_like)
  run = jax.jit(lambda p, t: tower.apply({"params": p}, t)[1])
  base = np.asarray(run(params, _tokens()))
  later = _tokens()
  later[1, 6] = 7 if later[1, 6] != 7 else 8       # a later token of a full row
  changed = np.asarray(run(params, later))
  np.testing.assert_allclose(changed[1, :6], base[1, :6], atol=1e-6)
  assert float(np.abs(changed[1, 6:] - base[1, 6:]).max()) > 1e-4
  # Other prompts reach the first token (every token sees every prompt).
  other = _with(params, "prompt_tokens", lambda x: x + 0.5)
  assert float(np.abs(np.asarray(run(other, _tokens()))[:, 0] - base[:, 0]).max()) > 1e-4
