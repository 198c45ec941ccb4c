"""The unified (prefix-LM) model's pieces that stand alone (issue 21): the one attention-mask
rule against written-out masks, the suffix-only loss, location tokens (round trip, parsers)
and constrained decoding (every output parses, from logits that know nothing)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vlx import decode, decode_constraints as dc
from vlx.data.loc_tokens import LocTokens, parse_box, parse_detections
from vlx.models.masks import attention_mask, prefix_lm_mask_ar
from vlx.objectives.prefix_lm import suffix_loss

T, F = True, False


@pytest.mark.parametrize("mask_ar,want", [
    ([0, 0, 1, 1], [[T, T, F, F], [T, T, F, F], [T, T, T, F], [T, T, T, T]]),   # prefix-LM
    ([1, 1, 1, 1], [[T, F, F, F], [T, T, F, F], [T, T, T, F], [T, T, T, T]]),   # causal
    ([1, 0, 1, 0], [[T, T, F, F], [T, T, F, F], [T, T, T, T], [T, T, T, T]]),   # block-causal
    ([0, 0, 0, 0], [[T] * 4] * 4),                                              # full
])
def test_one_mask_rule_gives_each_written_out_mask(mask_ar, want):
  got = attention_mask(jnp.array([mask_ar]))
  assert got.shape == (1, 1, 4, 4)
  np.testing.assert_array_equal(got[0, 0], np.array(want))


def test_padding_is_neither_query_nor_key_and_prefix_helper_matches():
  got = attention_mask(jnp.array([[0, 0, 1, 1, 1]]), jnp.array([[T, T, T, T, F]]))[0, 0]
  want = np.array([[T, T, F, F, F], [T, T, F, F, F], [T, T, T, F, F], [T, T, T, T, F],
                   [F, F, F, F, F]])
  np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(prefix_lm_mask_ar(2, 5), [0, 0, 1, 1, 1])


def test_suffix_loss_reads_only_suffix_tokens_and_averages_per_example_first():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 6, 7)).astype(np.float32)
  targets = rng.integers(0, 7, (2, 6))
  mask = np.array([[0, 0, 1, 1, 1, 0], [0, 0, 0, 0, 1, 0]], np.float32)  # prefix, suffix, pad
  loss, acc, n = suffix_loss(logits, targets, mask)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  nll = -np.take_along_axis(logp, targets[..., None], -1)[..., 0]
  want = np.mean([(nll[b] * mask[b]).sum() / mask[b].sum() for b in range(2)])
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  assert int(n) == 2
  moved = logits.copy()
  moved[mask == 0] = rng.normal(size=moved[mask == 0].shape) * 10  # prefix and padding
  np.testing.assert_allclose(suffix_loss(moved, targets, mask)[0], loss, rtol=1e-6)
  hits = (logits.argmax(-1) == targets) * mask
  np.testing.assert_allclose(acc, hits.sum() / mask.sum(), rtol=1e-6)


def test_boxes_round_trip_within_half_a_bin_and_spell_as_paligemma():
  loc = LocTokens(start=300, num_bins=1024)
  boxes = np.random.default_rng(1).uniform(0, 1, (1000, 4))
  back = loc.decode(loc.encode(boxes))
  assert np.abs(back - boxes).max() <= 0.5 / 1024 + 1e-7
  np.testing.assert_array_equal(loc.encode([0.0, 1.0, 0.5, 0.999]), [300, 1323, 812, 1322])
  assert loc.names()[0] == "<loc0000>" and loc.names()[-1] == "<loc1023>"


def test_parsers_reject_malformed_output():
  loc, eos = LocTokens(start=100, num_bins=16), 2
  box = [104, 100, 112, 108]
  np.testing.assert_allclose(parse_box(box + [eos, 0], loc, eos), [4.5 / 16, 0.5 / 16,
                                                                   12.5 / 16, 8.5 / 16])
  np.testing.assert_allclose(parse_box([112, 108, 104, 100, eos], loc, eos),
                             parse_box(box + [eos], loc, eos))  # corners put in order
  for bad in (box, box[:3] + [eos], box + [104, eos], [104, 7, 112, 108, eos], [eos]):
    assert parse_box(bad, loc, eos) is None, bad
  names, sep = [[5], [5, 6], [9]], 3
  good = box + [5, 6, sep] + box + [9, eos]
  parsed = parse_detections(good, loc, eos, names, sep)
  assert [c for _, c in parsed] == [1, 2]
  assert parse_detections([eos], loc, eos, names, sep) == []
  for bad in (box + [5, 7, eos], box + [eos], box + [5, sep, eos], box[:3] + [5, eos],
              box + [5, 104, eos], box + [5]):
    assert parse_detections(bad, loc, eos, names, sep) is None, bad


def _random_step(vocab, seed):
  """Logits that know nothing (a random model's), different at every position."""
  def step(state, seq, t):
    key = jax.random.fold_in(jax.random.key(seed), t)
    return jax.random.normal(key, (seq.shape[0], vocab)) * 5, state
  return step


@pytest.mark.parametrize("method", ["greedy", "sample", "beam"])
def test_constrained_decoding_always_parses_and_never_leaves_the_grammar(method):
  vocab, loc, eos, sep = 140, LocTokens(start=100, num_bins=32), 2, 3
  names = [[5], [5, 6], [9, 10, 11]]
  tasks = {
      "grounding": (dc.grounding(vocab, loc.start, loc.num_bins, eos), 5,
                    lambda ids: parse_box(ids, loc, eos) is not None),
      "detection": (dc.detection(vocab, loc.start, loc.num_bins, eos, names, sep), 17,
                    lambda ids: parse_detections(ids, loc, eos, names, sep) is not None)}
  for name, (automaton, max_len, parses) in tasks.items():
    cfg = decode.DecodeConfig(method=method, max_len=max_len, beam_size=3)
    n = 64
    if method == "beam":  # under jit, as vlx.predict and the evaluators run the loops
      out = jax.jit(lambda: decode.beam_search(_random_step(vocab, 0), lambda s, _: s, (), n,
                                               cfg, 1, eos, automaton))()
    else:
      out = jax.jit(lambda: decode.greedy_or_sample(_random_step(vocab, 0), (), n, cfg, 1, eos,
                                                    jax.random.key(3), automaton))()
    out = np.asarray(out)
    assert all(parses(row) for row in out), (name, out[:3])
    tables = automaton.tables()
    for row in out:  # every emitted token was allowed where it was emitted
      state = jnp.array([automaton.start])
      for t, tok in enumerate(row):
        if tok == 0:
          break
        assert bool(dc.allowed(tables, state, max_len - t)[0, tok]), (name, row, t)
        state = dc.advance(tables, state, jnp.array([tok]))
    if name == "detection":  # the budget is used for objects, not cut mid-box
      assert max(len([t for t in row if loc.is_loc([t])[0]]) for row in out) >= 8
  free = decode.greedy_or_sample(_random_step(vocab, 0), (), 64,
                                 decode.DecodeConfig(max_len=5), 1, eos)
  assert not all(parse_box(row, loc, eos) is not None for row in np.asarray(free))


def test_a_budget_too_small_for_the_grammar_is_one_clear_error():
  automaton = dc.grounding(40, 10, 8, 2)
  with pytest.raises(ValueError, match="max_len 4 is too short.*at least 5"):
    decode.greedy_or_sample(_random_step(40, 0), (), 2, decode.DecodeConfig(max_len=4), 1, 2,
                            None, automaton)
