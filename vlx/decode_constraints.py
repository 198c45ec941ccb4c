"""Constrained decoding: a token automaton that the jitted decoding loops step with the
tokens they emit, masking every token that would break the output's grammar, so that a
grounding or detection output always parses (vlx/data/loc_tokens.py), even from a randomly
initialised model.

The automaton is two small tables: `token_class [V]` (location tokens share one class, EOS
one, the separator one, each token that occurs in a class name its own, everything else the
"other" class) and `transitions [S, C]` (the next state, -1: not allowed). `finish [S]`, the
fewest tokens from a state to the end (EOS included), lets the loop refuse a token after
which the output could no longer end inside `max_len`: the budget runs out on a complete
output, never halfway through a box. Dense per-token tables would be `S x V` (a 257k Gemma
vocabulary times every state); classes keep them `S x C` plus one `[V]` row.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

OTHER, LOC, EOS_CLASS, SEP = 0, 1, 2, 3


class Tables(NamedTuple):
  """The automaton as device arrays, what the decoding loops index."""
  token_class: jax.Array   # [V]
  transitions: jax.Array   # [S, C]
  finish: jax.Array        # [S]
  sink: int                # the state a refused token leads to (no way out)


@dataclasses.dataclass(frozen=True, eq=False)
class TokenAutomaton:
  """`transitions`' last row is the sink: no edges, where a refused token (a dead beam
  hypothesis) leads instead of wrapping around to another state."""
  token_class: np.ndarray   # [V] int32
  transitions: np.ndarray   # [S, C] int32, -1 = not allowed
  start: int = 0

  @property
  def finish(self) -> np.ndarray:
    """[S]: the fewest tokens from each state to an emitted EOS (large if none)."""
    eos_states = self.transitions[:, EOS_CLASS] >= 0
    big = np.iinfo(np.int32).max // 2
    dist = np.where(eos_states, 1, big).astype(np.int64)
    for _ in range(len(dist)):  # Bellman-Ford over at most S rounds
      nxt = np.where(self.transitions >= 0, dist[np.maximum(self.transitions, 0)] + 1, big)
      new = np.minimum(dist, nxt.min(axis=1))
      if np.array_equal(new, dist):
        break
      dist = new
    return dist.astype(np.int32)

  def tables(self) -> Tables:
    """The device arrays the decoding loops index (staged as constants under jit)."""
    return Tables(jnp.asarray(self.token_class), jnp.asarray(self.transitions),
                  jnp.asarray(self.finish), len(self.transitions) - 1)

  def check_room(self, max_len: int) -> None:
    """One clear error when no output of this grammar fits in `max_len` tokens."""
    need = int(self.finish[self.start])
    if need > max_len:
      raise ValueError(f"decoding max_len {max_len} is too short for the constrained output "
                       f"(it needs at least {need} tokens)")


def allowed(tables: Tables, states, steps_left):
  """Bool `[N, V]`: the tokens each sequence in `states [N]` may emit with `steps_left`
  tokens of room (this one included). EOS needs no room after it; any other token must leave
  a way to EOS in what remains. Decided per class (`[N, C]`), then spread over the vocabulary
  by one gather."""
  nxt = tables.transitions[states]                                             # [N, C]
  classes = jnp.arange(nxt.shape[-1])
  room = jnp.where(classes == EOS_CLASS, 0, tables.finish[jnp.maximum(nxt, 0)])
  ok = (nxt >= 0) & (room <= steps_left - 1)
  return ok[:, tables.token_class]


def advance(tables: Tables, states, tokens):
  """The states after emitting `tokens [N]` (a refused token leads to the sink)."""
  nxt = tables.transitions[states, tables.token_class[tokens]]
  return jnp.where(nxt < 0, tables.sink, nxt)


class _Builder:
  """States and class transitions, with one class per distinct name token."""

  def __init__(self, vocab_size: int, loc_start: int, num_bins: int, eos: int,
               sep: Optional[int]):
    self.token_class = np.full((vocab_size,), OTHER, np.int32)
    self.token_class[loc_start:loc_start + num_bins] = LOC
    self.token_class[eos] = EOS_CLASS
    if sep is not None:
      self.token_class[sep] = SEP
    self.num_classes = 4
    self.edges = []  # (state, class, next)
    self.num_states = 0

  def state(self) -> int:
    self.num_states += 1
    return self.num_states - 1

  def name_class(self, token: int) -> int:
    if self.token_class[token] in (LOC, EOS_CLASS, SEP):
      raise ValueError(f"class names may not hold location, EOS or separator tokens ({token})")
    if self.token_class[token] == OTHER:
      self.token_class[token] = self.num_classes
      self.num_classes += 1
    return int(self.token_class[token])

  def build(self, start: int = 0) -> TokenAutomaton:
    self.state()  # the sink: the last row, no edges
    table = np.full((self.num_states, self.num_classes), -1, np.int32)
    for s, c, n in self.edges:
      table[s, c] = n
    return TokenAutomaton(self.token_class, table, start)


def _boxes(b: _Builder, first: int, count: int = 4) -> int:
  """`count` location tokens from `first`; returns the state after the last."""
  s = first
  for _ in range(count):
    n = b.state()
    b.edges.append((s, LOC, n))
    s = n
  return s


def grounding(vocab_size: int, loc_start: int, num_bins: int, eos: int) -> TokenAutomaton:
  """Exactly one box: 4 location tokens, then EOS."""
  b = _Builder(vocab_size, loc_start, num_bins, eos, None)
  start = b.state()
  box = _boxes(b, start)
  b.edges.append((box, EOS_CLASS, b.state()))
  return b.build(start)


def detection(vocab_size: int, loc_start: int, num_bins: int, eos: int,
              names: Sequence[Sequence[int]], sep: Optional[int] = None) -> TokenAutomaton:
  """Any number of objects, each 4 location tokens then one of `names` (token ids; a trie,
  so names may share a prefix), separated by `sep` if given, then EOS (at once: no object)."""
  b = _Builder(vocab_size, loc_start, num_bins, eos, sep)
  start, done, first = b.state(), b.state(), b.state()  # first: one coordinate in
  b.edges += [(start, EOS_CLASS, done), (start, LOC, first)]
  after_box = _boxes(b, first, 3)
  trie = {}  # (state, class) -> next state
  ends = set()
  for name in names:
    if not len(name):
      raise ValueError("an empty class name")
    s = after_box
    for token in name:
      key = (s, b.name_class(int(token)))
      if key not in trie:
        trie[key] = b.state()
        b.edges.append((key[0], key[1], trie[key]))
      s = trie[key]
    ends.add(s)
  # A complete name: EOS, or the next object (after a separator, which promises one: no EOS).
  again = None if sep is None else b.state()
  if again is not None:
    b.edges.append((again, LOC, first))
  for s in ends:
    b.edges.append((s, EOS_CLASS, done))
    b.edges.append((s, LOC, first) if again is None else (s, SEP, again))
  return b.build(start)
