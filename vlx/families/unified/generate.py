"""Generation from the prefix-LM: the prefix once, then vlx/decode.py's jitted loops (greedy,
sampling, beam search; constrained when a grammar is given) one token a step.

With the cache, a decoder-only model writes the prefix (`N` image tokens + the prompt block,
which ends with the token the answer starts from) into its KV cache in one pass, and that
last position's logits predict the first answer token; every later step writes one token at
the next cache index. An encoder-decoder encodes the prefix once (the prompt's last token
excluded: it is the decoder's first input) and its decoder caches only the answer. Without
the cache, every step runs the model's own forward (`model.__call__`, the training pass) on
the prefix and the answer so far, the rest masked: the reference the cached loops must equal.
Positions count real tokens only (model.positions_of), so a left-padded prompt changes nothing.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vlx import decode as decode_lib
from vlx.families.unified.model import positions_of
from vlx.models import masks


def _empty_cache(cached, variables, *args, method):
  """Zeros shaped like the cache a first call of `method` with `args` creates."""
  shapes = jax.eval_shape(lambda: cached.apply(variables, *args, method=method,
                                               mutable=["cache"])[1])
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes["cache"])


def _forward(model, params, img, prompt, prompt_mask, prompt_ar, answer, answer_real):
  """The training forward on [image; prompt; answer] -> logits of the text positions."""
  batch = {"image_embeds": img,
           "text_in": jnp.concatenate([prompt, answer], axis=1),
           "mask_ar": jnp.concatenate([jnp.asarray(prompt_ar, jnp.int32),
                                       jnp.ones(answer.shape, jnp.int32)], axis=1),
           "input_mask": jnp.concatenate([jnp.asarray(prompt_mask, bool), answer_real], axis=1)}
  return model.apply({"params": params}, batch)["logits"]


def make_generate_fn(model, cfg: decode_lib.DecodeConfig, eos: int, constraint=None,
                     return_logp: bool = False):
  """-> pure `fn(params, image, prompt, prompt_mask, prompt_ar, rng=None) -> ids [B, max_len]`
  (EOS kept, padding after). `prompt [B, P]`: the text prefix, its last position the token
  the answer follows (vlx's `sep`, or a PaliGemma prompt's newline); `prompt_mask` real
  tokens; `prompt_ar` its mask_ar (1 where a new causal block starts). `return_logp`
  (greedy or sampling): (ids, each token's log-prob under the distribution drawn from)."""
  cached = model.clone(decode=True)
  max_len = cfg.max_len
  seq2seq = getattr(model, "layout", "decoder_only") == "encoder_decoder"

  def generate(params, image, prompt, prompt_mask, prompt_ar, rng=None):
    beams = cfg.beam_size if cfg.method == "beam" else 1
    v = {"params": params}
    img = model.apply(v, image, method="image_embeds")
    if beams > 1:
      img, prompt, prompt_mask, prompt_ar = (jnp.repeat(a, beams, axis=0) for a in
                                             (img, prompt, prompt_mask, prompt_ar))
    rows, n = img.shape[:2]
    prompt_mask = jnp.asarray(prompt_mask, bool)

    if not cfg.use_cache:
      p = prompt.shape[1]

      def step(_, seq, t):
        live = jnp.broadcast_to(jnp.arange(max_len) < t, (rows, max_len))
        logits = _forward(model, params, img, prompt, prompt_mask, prompt_ar, seq[:, 1:], live)
        return jax.lax.dynamic_index_in_dim(logits, p - 1 + t, axis=1, keepdims=False), ()
      state, reorder = (), (lambda s, _: s)
    elif seq2seq:
      step, state = _seq2seq_steps(cached, params, img, prompt, prompt_mask, max_len)
      reorder = decode_lib.reorder_cache
    else:
      step, state = _prefix_steps(cached, params, img, prompt, prompt_mask, prompt_ar, max_len)
      reorder = decode_lib.reorder_cache

    # The loops' BOS slot is never read: the prompt's last token is the answer's start.
    bos = 0
    if cfg.method == "beam":
      if return_logp:
        raise ValueError("return_logp is for greedy decoding and sampling, not beam search")
      return decode_lib.beam_search(step, reorder, state, rows // beams, cfg, bos, eos,
                                    constraint)
    return decode_lib.greedy_or_sample(step, state, rows, cfg, bos, eos, rng, constraint,
                                       return_logp)

  return generate


def _prefix_steps(cached, params, img, prompt, prompt_mask, prompt_ar, max_len):
  """Decoder-only: prefill the prefix into the cache; step t >= 1 writes answer token t - 1."""
  v = {"params": params}
  rows, n = img.shape[:2]
  x = jnp.concatenate([img, cached.apply(v, prompt, method="embed_text")], axis=1)
  real = jnp.concatenate([jnp.ones((rows, n), bool), prompt_mask], axis=1)
  ar = jnp.concatenate([jnp.zeros((rows, n), jnp.int32), jnp.asarray(prompt_ar, jnp.int32)], 1)
  lp = x.shape[1]
  total = lp + max_len
  cache = _empty_cache(cached, v, jnp.zeros((rows, total, x.shape[-1]), x.dtype),
                       jnp.zeros((rows, total), jnp.int32),
                       jnp.ones((rows, 1, total, total), bool), method="run")
  mask = jnp.pad(masks.attention_mask(ar, real), ((0, 0), (0, 0), (0, 0), (0, max_len)))
  logits, mutated = cached.apply({"params": params, "cache": cache}, x, positions_of(real),
                                 mask, method="run", mutable=["cache"])
  keys_real = jnp.pad(real, ((0, 0), (0, max_len)))
  count = real.sum(axis=1).astype(jnp.int32)        # real prefix tokens per row
  index = jnp.arange(total)

  def step(state, seq, t):
    cache, first = state

    def run():
      token = jax.lax.dynamic_slice_in_dim(seq, t, 1, axis=1)
      visible = keys_real | ((index >= lp) & (index < lp + t))
      out, mut = cached.apply({"params": params, "cache": cache},
                              cached.apply(v, token, method="embed_text"),
                              (count + t - 1)[:, None], visible[:, None, None, :],
                              method="run", mutable=["cache"])
      return out[:, 0], mut["cache"]
    logits, cache = jax.lax.cond(t == 0, lambda: (first, cache), run)
    return logits, (cache, first)
  return step, (mutated["cache"], logits[:, -1])


def _seq2seq_steps(cached, params, img, prompt, prompt_mask, max_len):
  """Encoder-decoder: encode [image; prompt without its last token] once; the decoder reads
  the prompt's last token at step 0 and answer token t - 1 at step t, caching only itself.
  The split the model trained with must be this one: the whole prompt in block 0 of
  `mask_ar` but its last token (not `isolate`d prompts, whose tokens the model's forward
  sends to the decoder)."""
  v = {"params": params}
  rows, n = img.shape[:2]
  x = jnp.concatenate([img, cached.apply(v, prompt[:, :-1], method="embed_text")], axis=1)
  memory_real = jnp.concatenate([jnp.ones((rows, n), bool), prompt_mask[:, :-1]], axis=1)
  memory = cached.apply(v, x, memory_real, method="encode")
  width = memory.shape[-1]
  total = max_len + 1
  cache = _empty_cache(cached, v, jnp.zeros((rows, total, width), memory.dtype),
                       jnp.zeros((rows, total), jnp.int32),
                       jnp.ones((rows, 1, total, total), bool), memory, memory_real,
                       method="decode_step")
  index = jnp.arange(total)
  start = prompt[:, -1:]

  def step(cache, seq, t):
    token = jnp.where(t == 0, start, jax.lax.dynamic_slice_in_dim(seq, t, 1, axis=1))
    visible = jnp.broadcast_to(index <= t, (rows, total))
    out, mut = cached.apply({"params": params, "cache": cache},
                            cached.apply(v, token, method="embed_text"),
                            jnp.full((rows, 1), t, jnp.int32), visible[:, None, None, :],
                            memory, memory_real, method="decode_step", mutable=["cache"])
    return out[:, 0], mut["cache"]
  return step, cache


def make_answer_logp_fn(model):
  """-> pure `fn(params, image, prompt, prompt_mask, prompt_ar, answer) -> logp [B, A]`: the
  log-probability of each answer token (ids as the generator returns them, EOS kept; zeros
  after EOS) given the image, the prompt and the answer before it, in one teacher-forced
  training forward: the scores of generated detections (Pix2Seq ranks boxes by them)."""

  def logp(params, image, prompt, prompt_mask, prompt_ar, answer):
    img = model.apply({"params": params}, image, method="image_embeds")
    a = answer.shape[1]
    ended = jnp.cumsum(answer == decode_lib.PAD_ID, axis=1) > 0
    # The answer's last token is never an input (nothing after it is scored).
    logits = _forward(model, params, img, prompt, prompt_mask, prompt_ar, answer[:, :-1],
                      ~ended[:, :-1])
    lp = jax.nn.log_softmax(logits[:, -a:], axis=-1)
    tok = jnp.take_along_axis(lp, answer[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return jnp.where(ended, 0.0, tok)

  return logp
