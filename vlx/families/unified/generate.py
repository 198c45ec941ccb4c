"""Generation from the prefix-LM: one prefill of image + prompt, then vlx/decode.py's jitted
loops (greedy, sampling, beam search; constrained when a grammar is given) one token a step.

With the cache, the prefix (`N` image tokens + the prompt block, which ends with the token
the answer starts from) is written into the decoder's KV cache in one pass and its last
position's logits predict the first answer token; every later step writes one token at the
next cache index. Without the cache, every step runs the whole buffer (prefix + the answer so
far, the rest masked) again: the reference the cached path must equal. Positions count real
tokens only (model.positions_of), so a left-padded prompt changes nothing.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vlx import decode as decode_lib
from vlx.families.unified.model import positions_of
from vlx.models import masks


def make_generate_fn(model, cfg: decode_lib.DecodeConfig, eos: int, constraint=None):
  """-> pure `fn(params, image, prompt, prompt_mask, prompt_ar, rng=None) -> ids [B, max_len]`
  (EOS kept, padding after). `prompt [B, P]`: the text prefix, its last position the token
  the answer follows (vlx's `sep`, or a PaliGemma prompt's newline); `prompt_mask` real
  tokens; `prompt_ar` its mask_ar (1 where a new causal block starts)."""
  cached = model.clone(decode=True)
  max_len = cfg.max_len

  def generate(params, image, prompt, prompt_mask, prompt_ar, rng=None):
    beams = cfg.beam_size if cfg.method == "beam" else 1
    v = {"params": params}
    img = model.apply(v, image, method="image_embeds")
    b, n = img.shape[:2]
    x = jnp.concatenate([img, model.apply(v, prompt, method="embed_text")], axis=1)
    real = jnp.concatenate([jnp.ones((b, n), bool), jnp.asarray(prompt_mask, bool)], axis=1)
    ar = jnp.concatenate([jnp.zeros((b, n), jnp.int32), jnp.asarray(prompt_ar, jnp.int32)],
                         axis=1)
    if beams > 1:
      x, real, ar = (jnp.repeat(a, beams, axis=0) for a in (x, real, ar))
    rows, lp = x.shape[0], x.shape[1]
    total = lp + max_len
    count = real.sum(axis=1).astype(jnp.int32)        # real prefix tokens per row

    if cfg.use_cache:
      width = x.shape[-1]
      full = jnp.zeros((rows, total, width), x.dtype)
      shapes = jax.eval_shape(lambda: cached.apply(
          v, full, jnp.zeros((rows, total), jnp.int32),
          jnp.ones((rows, 1, total, total), bool), method="run", mutable=["cache"])[1])
      cache = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes["cache"])
      mask = jnp.pad(masks.attention_mask(ar, real), ((0, 0), (0, 0), (0, 0), (0, max_len)))
      logits, mutated = cached.apply({"params": params, "cache": cache}, x, positions_of(real),
                                     mask, method="run", mutable=["cache"])
      state = (mutated["cache"], logits[:, -1])
      keys_real = jnp.pad(real, ((0, 0), (0, max_len)))
      index = jnp.arange(total)

      def step(state, seq, t):
        cache, first = state

        def run():
          token = jax.lax.dynamic_slice_in_dim(seq, t, 1, axis=1)
          visible = keys_real | ((index >= lp) & (index < lp + t))
          out, mut = cached.apply({"params": params, "cache": cache},
                                  model.apply(v, token, method="embed_text"),
                                  (count + t - 1)[:, None], visible[:, None, None, :],
                                  method="run", mutable=["cache"])
          return out[:, 0], mut["cache"]
        logits, cache = jax.lax.cond(t == 0, lambda: (first, cache), run)
        return logits, (cache, first)
      reorder = decode_lib.reorder_cache
    else:
      state = ()

      def step(_, seq, t):
        answer = seq[:, 1:]
        xs = jnp.concatenate([x, model.apply(v, answer, method="embed_text")], axis=1)
        live = jnp.concatenate([real, jnp.broadcast_to(jnp.arange(max_len) < t,
                                                       (rows, max_len))], axis=1)
        ars = jnp.concatenate([ar, jnp.ones((rows, max_len), jnp.int32)], axis=1)
        logits = model.apply(v, xs, positions_of(live), masks.attention_mask(ars, live),
                             method="run")
        return jax.lax.dynamic_index_in_dim(logits, lp - 1 + t, axis=1, keepdims=False), ()
      reorder = lambda s, _: s  # noqa: E731

    # The loops' BOS slot is never read: the prefix's last token is the answer's start.
    bos = 0
    if cfg.method == "beam":
      return decode_lib.beam_search(step, reorder, state, rows // beams, cfg, bos, eos,
                                    constraint)
    return decode_lib.greedy_or_sample(step, state, rows, cfg, bos, eos, rng, constraint)

  return generate


def make_answer_logp_fn(model):
  """-> pure `fn(params, image, prompt, prompt_mask, prompt_ar, answer) -> logp [B, A]`: the
  log-probability of each answer token (ids as the generator returns them, EOS kept; zeros
  after EOS) given the image, the prompt and the answer before it, in one teacher-forced
  pass: the scores of generated detections (Pix2Seq ranks boxes by them)."""

  def logp(params, image, prompt, prompt_mask, prompt_ar, answer):
    v = {"params": params}
    img = model.apply(v, image, method="image_embeds")
    b, n = img.shape[:2]
    a = answer.shape[1]
    # The answer's last token is never an input (nothing after it is scored).
    text = jnp.concatenate([prompt, answer[:, :-1]], axis=1)
    x = jnp.concatenate([img, model.apply(v, text, method="embed_text")], axis=1)
    ended = jnp.cumsum(answer == decode_lib.PAD_ID, axis=1) > 0
    real = jnp.concatenate([jnp.ones((b, n), bool), jnp.asarray(prompt_mask, bool),
                            ~ended[:, :-1]], axis=1)
    ar = jnp.concatenate([jnp.zeros((b, n), jnp.int32), jnp.asarray(prompt_ar, jnp.int32),
                          jnp.ones((b, a - 1), jnp.int32)], axis=1)
    logits = model.apply(v, x, positions_of(real), masks.attention_mask(ar, real), method="run")
    lp = jax.nn.log_softmax(logits[:, -a:], axis=-1)
    tok = jnp.take_along_axis(lp, answer[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return jnp.where(ended, 0.0, tok)

  return logp
