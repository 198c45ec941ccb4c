"""Batched autoregressive decoding under `jax.jit`: greedy, beam search, sampling.

Works for any model with the captioner protocol (vlx/families/coca/model.py):
`image_memory(image)` and `decode_tokens(tokens, memory)`, the latter with a
`decode` attribute that turns on a KV cache in the "cache" collection. The loops
are `lax.while_loop`s over fixed-shape buffers, so a whole batch decodes in one
compiled program on any mesh (the batch axis is sharded like training's), and stop
as soon as every sequence has ended. Same params, images and rng -> same tokens.

Output: caption token ids [B, max_len] with EOS kept and padding (0) after it, the
format the tokenizer decodes.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Tuple

import jax
import jax.numpy as jnp

from vlx import decode_constraints
from vlx.token_ids import PAD_ID

NEG_INF = -1e9  # finite: keeps arithmetic on masked candidates NaN-free


@dataclasses.dataclass(frozen=True)
class DecodeConfig:
  method: str = "greedy"        # greedy | beam | sample
  max_len: int = 32             # caption tokens to generate at most (EOS included)
  beam_size: int = 4
  length_penalty: float = 0.6   # GNMT alpha: score = logp / ((5 + len) / 6) ** alpha
  temperature: float = 1.0
  top_k: int = 0                # 0: off
  top_p: float = 1.0            # 1.0: off
  use_cache: bool = True

  def __post_init__(self):
    if self.method not in ("greedy", "beam", "sample"):
      raise ValueError(f"unknown decoding method {self.method!r}; known: greedy, beam, sample")
    if self.max_len < 1 or self.beam_size < 1:
      raise ValueError("decoding needs max_len >= 1 and beam_size >= 1")


# A step maps (state, tokens [N, L+1], t) -> (logits [N, V] predicting token t + 1, state).
StepFn = Callable[[Any, jax.Array, jax.Array], Tuple[jax.Array, Any]]


def filter_logits(logits, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0):
  """Temperature, then top-k, then nucleus (top-p) filtering; removed tokens get NEG_INF."""
  logits = logits.astype(jnp.float32) / max(float(temperature), 1e-6)
  if top_k and top_k < logits.shape[-1]:
    kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
    logits = jnp.where(logits < kth, NEG_INF, logits)
  if top_p < 1.0:
    sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    # Keep the smallest prefix whose mass reaches top_p (the top token always stays).
    kept = jnp.where(mass_before < top_p, sorted_logits, jnp.inf)
    threshold = jnp.min(kept, axis=-1, keepdims=True)
    logits = jnp.where(logits < threshold, NEG_INF, logits)
  return logits


def _no_padding(logits):
  """Padding is never a next token (it only fills the buffer after EOS)."""
  return logits.astype(jnp.float32).at[..., PAD_ID].set(NEG_INF)


def _write(seq, tok, t):
  return jax.lax.dynamic_update_slice_in_dim(seq, tok[..., None].astype(seq.dtype), t + 1,
                                             axis=seq.ndim - 1)


def _constrained(logits, tables, cstate, steps_left):
  """Logits with every token the automaton refuses (grammar or room) at NEG_INF."""
  if tables is None:
    return logits
  ok = decode_constraints.allowed(tables, cstate.reshape(-1), steps_left)
  return jnp.where(ok.reshape(logits.shape), logits, NEG_INF)


def _tables(constraint, max_len: int):
  """(device tables or None, start state), after checking that an output fits."""
  if constraint is None:
    return None, 0
  constraint.check_room(max_len)
  return constraint.tables(), int(constraint.start)


def greedy_or_sample(step: StepFn, state, n: int, cfg: DecodeConfig, bos: int, eos: int,
                     rng: Optional[jax.Array] = None, constraint=None,
                     return_logp: bool = False):
  """`constraint`: a decode_constraints.TokenAutomaton the output must follow (None: free).
  `return_logp`: also return each written token's log-probability [n, max_len] under the
  distribution it was drawn from (padding excluded, tempered and filtered when sampling; 0
  after EOS): the behaviour policy's log-probs a policy-gradient update needs."""
  sample = cfg.method == "sample"
  if sample and rng is None:
    raise ValueError("sampling needs an rng")
  seq = jnp.full((n, cfg.max_len + 1), PAD_ID, jnp.int32).at[:, 0].set(bos)
  logps = jnp.zeros((n, cfg.max_len), jnp.float32)
  tables, start = _tables(constraint, cfg.max_len)

  def body(carry):
    t, seq, logps, state, done, cstate = carry
    logits, state = step(state, seq, t)
    logits = _constrained(_no_padding(logits), tables, cstate, cfg.max_len - t)
    if sample:
      logits = filter_logits(logits, cfg.temperature, cfg.top_k, cfg.top_p)
      tok = jax.random.categorical(jax.random.fold_in(rng, t), logits, axis=-1)
    else:
      tok = jnp.argmax(logits, axis=-1)
    if return_logp:
      lp = jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), tok[:, None], axis=-1)
      logps = jax.lax.dynamic_update_index_in_dim(logps, jnp.where(done, 0.0, lp[:, 0]), t,
                                                  axis=1)
    tok = jnp.where(done, PAD_ID, tok)
    if tables is not None:
      cstate = jnp.where(done, cstate, decode_constraints.advance(tables, cstate, tok))
    return t + 1, _write(seq, tok, t), logps, state, done | (tok == eos), cstate

  def cond(carry):
    t, _, _, _, done, _ = carry
    return (t < cfg.max_len) & ~jnp.all(done)

  _, seq, logps, _, _, _ = jax.lax.while_loop(
      cond, body, (jnp.zeros((), jnp.int32), seq, logps, state, jnp.zeros((n,), bool),
                   jnp.full((n,), start, jnp.int32)))
  return (seq[:, 1:], logps) if return_logp else seq[:, 1:]


def _penalty(length, alpha: float):
  return ((5.0 + length.astype(jnp.float32)) / 6.0) ** alpha


def beam_search(step: StepFn, reorder: Callable[[Any, jax.Array], Any], state, n: int,
                cfg: DecodeConfig, bos: int, eos: int, constraint=None):
  """Beam search where finished hypotheses stay in the beam and compete by length-
  normalized score; a beam of 1 is exactly greedy decoding. `constraint` as for
  greedy_or_sample (each hypothesis follows it; refused tokens renormalised away)."""
  k, max_len = cfg.beam_size, cfg.max_len
  tables, start = _tables(constraint, max_len)
  cstate = jnp.full((n, k), start, jnp.int32)
  seq = jnp.full((n, k, max_len + 1), PAD_ID, jnp.int32).at[..., 0].set(bos)
  logp = jnp.tile(jnp.array([0.0] + [NEG_INF] * (k - 1), jnp.float32), (n, 1))
  length = jnp.zeros((n, k), jnp.int32)
  finished = jnp.zeros((n, k), bool)

  def body(carry):
    t, seq, logp, length, finished, state, cstate = carry
    logits, state = step(state, seq.reshape(n * k, max_len + 1), t)
    vocab = logits.shape[-1]
    logits = _constrained(_no_padding(logits), tables, cstate, max_len - t)
    token_logp = jax.nn.log_softmax(logits, -1).reshape(n, k, vocab)
    # A finished hypothesis has one continuation: padding, at no cost.
    stay = jnp.full((vocab,), NEG_INF, jnp.float32).at[PAD_ID].set(0.0)
    cand = logp[..., None] + jnp.where(finished[..., None], stay, token_logp)
    cand_len = jnp.where(finished, length, t + 1)
    score = cand / _penalty(cand_len, cfg.length_penalty)[..., None]
    _, idx = jax.lax.top_k(score.reshape(n, k * vocab), k)
    parent, tok = idx // vocab, idx % vocab
    gather = lambda x: jnp.take_along_axis(x, parent, axis=1)  # noqa: E731
    parent_done = gather(finished)
    tok = jnp.where(parent_done, PAD_ID, tok)
    new_seq = jnp.take_along_axis(seq, parent[..., None], axis=1)
    state = reorder(state, (jnp.arange(n)[:, None] * k + parent).reshape(-1))
    if tables is not None:
      moved = decode_constraints.advance(tables, gather(cstate).reshape(-1), tok.reshape(-1))
      cstate = jnp.where(parent_done, gather(cstate), moved.reshape(n, k))
    return (t + 1, _write(new_seq, tok, t),
            jnp.take_along_axis(cand.reshape(n, k * vocab), idx, axis=1),
            jnp.where(parent_done, gather(length), t + 1),
            parent_done | (tok == eos), state, cstate)

  def cond(carry):
    t, _, _, _, finished, _, _ = carry
    return (t < max_len) & ~jnp.all(finished)

  _, seq, logp, length, _, _, _ = jax.lax.while_loop(
      cond, body, (jnp.zeros((), jnp.int32), seq, logp, length, finished, state, cstate))
  best = jnp.argmax(logp / _penalty(length, cfg.length_penalty), axis=1)
  return jnp.take_along_axis(seq, best[:, None, None], axis=1)[:, 0, 1:]


def reorder_cache(cache, flat_index):
  """Gathers every cache entry's batch rows (beam reordering); scalars stay. Entries
  under an `nn.scan` stack ('layers') carry the layer axis first, the batch second."""
  def take(path, x):
    if x.ndim == 0:
      return x
    scanned = any(getattr(p, "key", None) == "layers" for p in path)
    return jnp.take(x, flat_index, axis=1 if scanned else 0)
  return jax.tree_util.tree_map_with_path(take, cache)


def make_generate_fn(model, cfg: DecodeConfig, bos: int, eos: int, constraint=None):
  """-> pure `fn(params, images, rng, frame_mask=None) -> tokens [B, max_len]`, ready for
  `jax.jit`; `images` may be videos, with their `frame_mask` for padded clips. `constraint`:
  a decode_constraints.TokenAutomaton every output follows."""
  cached_model = model.clone(decode=True)

  def generate(params, images, rng=None, frame_mask=None):
    inputs = (images,) if frame_mask is None else (images, frame_mask)
    memory = model.apply({"params": params}, *inputs, method="image_memory")
    beams = cfg.beam_size if cfg.method == "beam" else 1
    if beams > 1:
      memory = jnp.repeat(memory, beams, axis=0)
    n = memory.shape[0]
    buffer = jnp.zeros((n, cfg.max_len + 1), jnp.int32)

    if cfg.use_cache:
      shapes = jax.eval_shape(lambda: cached_model.apply(
          {"params": params}, buffer, memory, method="decode_tokens", mutable=["cache"])[1])
      state = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes["cache"])

      def step(cache, seq, t):
        token = jax.lax.dynamic_slice_in_dim(seq, t, 1, axis=1)
        logits, mutated = cached_model.apply({"params": params, "cache": cache}, token, memory,
                                             method="decode_tokens", mutable=["cache"])
        return logits[:, 0], mutated["cache"]
      reorder = reorder_cache
    else:
      state = ()

      def step(_, seq, t):
        # No cache: the whole fixed-size buffer again at every position.
        logits = model.apply({"params": params}, seq, memory, method="decode_tokens")
        return jax.lax.dynamic_index_in_dim(logits, t, axis=1, keepdims=False), ()
      reorder = lambda s, _: s  # noqa: E731

    if beams > 1:
      return beam_search(step, reorder, state, n // beams, cfg, bos, eos, constraint)
    if cfg.method == "beam":  # a beam of one
      return beam_search(step, reorder, state, n, cfg, bos, eos, constraint)
    return greedy_or_sample(step, state, n, cfg, bos, eos, rng, constraint)

  return generate
