"""Group-relative policy optimisation (GRPO) and its variants, as pure functions.

A batch holds P prompts x G sampled responses, flattened to N = P * G rows with the G
responses of one prompt next to each other (rows g * G ... g * G + G - 1). Everything here is
per token over `[N, L]` arrays with a `mask` of the response's tokens; nothing samples.

- advantages: the reward minus its group's mean, divided by the group's standard deviation
  (GRPO) or not (`scale="none"`, Dr. GRPO); a group whose rewards are all equal gets 0 and so
  no policy gradient.
- the surrogate: `min(ratio * A, clip(ratio, 1 - eps_low, 1 + eps_high) * A)` with the ratio
  per token (GRPO) or per sequence (`ratio="sequence"`, GSPO: the exp of the mean token
  log-ratio); `eps_high > eps_low` is DAPO's clip-higher.
- the KL penalty: the k3 estimator `exp(ref - new) - (ref - new) - 1` per token, >= 0 and 0
  where the policy equals the reference (`beta = 0` turns it off).
- the averaging (`average`): "sequence" (each response's token mean, then the mean over
  responses: GRPO), "token" (one mean over all response tokens: DAPO), "constant" (the token
  sum over N * `max_len`: Dr. GRPO, no length bias). Each returns a numerator and a
  denominator; under jit over the global (sharded) batch both are global sums, so the loss is
  the global ratio, never a mean of per-shard means.
"""

from __future__ import annotations

from typing import Dict, Tuple

import jax
import jax.numpy as jnp

from vlx import registry
from vlx.token_ids import PAD_ID

AVERAGES = ("sequence", "token", "constant")
RATIOS = ("token", "sequence")
SCALES = ("std", "none")


def group_advantages(rewards, group_size: int, scale: str = "std", eps: float = 1e-6):
  """rewards [N] (N = prompts * group_size, groups contiguous) -> advantages [N].
  `scale="std"` divides by the group's population standard deviation (+ eps); "none" keeps
  the centred reward (Dr. GRPO)."""
  if scale not in SCALES:
    raise ValueError(f"advantage scale {scale!r}: expected one of {', '.join(SCALES)}")
  r = jnp.asarray(rewards, jnp.float32).reshape(-1, group_size)
  centred = r - r.mean(axis=1, keepdims=True)
  if scale == "std":
    centred = centred / (r.std(axis=1, keepdims=True) + eps)
  return centred.reshape(-1)


def zero_std_fraction(rewards, group_size: int, tol: float = 1e-6):
  """The share of groups whose rewards are all equal (they teach the policy nothing)."""
  r = jnp.asarray(rewards, jnp.float32).reshape(-1, group_size)
  return jnp.mean((r.max(axis=1) - r.min(axis=1)) <= tol)


def informative_groups_first(rewards, group_size: int, keep: int, tol: float = 1e-6):
  """DAPO's dynamic sampling in a fixed-shape step: the rows of `keep` groups out of those
  sampled, the groups whose rewards differ first (in batch order), then identical-reward ones
  (no gradient) only if too few differ. -> row indices [keep * group_size]."""
  r = jnp.asarray(rewards, jnp.float32).reshape(-1, group_size)
  if not 0 < keep <= r.shape[0]:
    raise ValueError(f"keep {keep} groups of the {r.shape[0]} sampled: need 0 < keep <= "
                     f"{r.shape[0]}")
  flat = ((r.max(axis=1) - r.min(axis=1)) <= tol).astype(jnp.int32)
  groups = jnp.argsort(flat, stable=True)[:keep]
  return (groups[:, None] * group_size + jnp.arange(group_size)).reshape(-1)


def policy_logits(logits, temperature: float = 1.0):
  """The distribution responses are sampled from (vlx/decode.py's sampler): padding can never
  be drawn, and the logits are divided by the sampling temperature."""
  logits = logits.astype(jnp.float32).at[..., PAD_ID].set(-1e9)
  return logits / temperature


def token_logprobs(logits, targets):
  """logits [N, L, V] (position t predicts targets[:, t]), targets [N, L] -> log p [N, L],
  in fp32."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return jnp.take_along_axis(logp, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]


def token_entropy(logits):
  """logits [N, L, V] -> the policy's entropy per position [N, L] (nats)."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return -(jnp.exp(logp) * logp).sum(-1)


def k3_kl(logp, ref_logp):
  """Per-token k3 estimate of KL(policy || reference): exp(d) - d - 1 with d = ref - logp;
  unbiased under samples from the policy, >= 0, and 0 where the two agree."""
  d = ref_logp - logp
  return jnp.exp(d) - d - 1.0


def masked_average(per_token, mask, average: str, max_len: int = 0
                   ) -> Tuple[jax.Array, jax.Array]:
  """per_token [N, L], mask [N, L] -> (numerator, denominator) of the chosen average.
  "sequence": sum_i (sum_t x m / sum_t m) over N (rows without tokens count 0 / 1 row);
  "token": sum x m / sum m; "constant": sum x m / (N * max_len)."""
  mask = jnp.asarray(mask, jnp.float32)
  x = jnp.where(mask > 0, per_token, 0.0) * mask
  n = jnp.asarray(mask.shape[0], jnp.float32)
  if average == "sequence":
    per_row = x.sum(-1) / jnp.maximum(mask.sum(-1), 1.0)
    return per_row.sum(), n
  if average == "token":
    return x.sum(), jnp.maximum(mask.sum(), 1.0)
  if average == "constant":
    if max_len <= 0:
      raise ValueError("average='constant' (Dr. GRPO) needs max_len > 0: the number every "
                       "response's token sum is divided by")
    return x.sum(), n * max_len
  raise ValueError(f"average {average!r}: expected one of {', '.join(AVERAGES)}")


def clipped_surrogate(logp, old_logp, advantages, mask, eps_low: float, eps_high: float,
                      ratio: str = "token"):
  """The per-token PPO objective (to maximise) and where clipping bound.
  logp, old_logp, mask [N, L]; advantages [N]. `ratio="sequence"` (GSPO) uses one ratio per
  response, exp(mean over its tokens of logp - old_logp), for all its tokens."""
  if ratio not in RATIOS:
    raise ValueError(f"ratio {ratio!r}: expected one of {', '.join(RATIOS)}")
  mask = jnp.asarray(mask, jnp.float32)
  log_ratio = jnp.where(mask > 0, logp - old_logp, 0.0)
  if ratio == "sequence":
    seq = log_ratio.sum(-1) / jnp.maximum(mask.sum(-1), 1.0)
    log_ratio = jnp.broadcast_to(seq[:, None], logp.shape)
  r = jnp.exp(log_ratio)
  a = jnp.asarray(advantages, jnp.float32)[:, None]
  clipped = jnp.clip(r, 1.0 - eps_low, 1.0 + eps_high)
  objective = jnp.minimum(r * a, clipped * a)
  bound_low = (r < 1.0 - eps_low) & (a < 0)
  bound_high = (r > 1.0 + eps_high) & (a > 0)
  return objective, bound_low, bound_high


def grpo_terms(logp, old_logp, ref_logp, advantages, mask, *, eps_low: float = 0.2,
               eps_high: float = 0.2, beta: float = 0.0, average: str = "sequence",
               max_len: int = 0, ratio: str = "token") -> Dict[str, jax.Array]:
  """The GRPO loss (to minimise) and its parts, from per-token log-probs.
  `old_logp`: the policy that sampled the responses (equal to `logp` up to the gradient on
  the first update of a batch); `ref_logp`: the frozen reference, or None (needed for beta >
  0; with beta 0 its KL is only reported)."""
  if beta > 0 and ref_logp is None:
    raise ValueError("grpo: beta > 0 needs the reference policy's log-probs")
  objective, low, high = clipped_surrogate(logp, old_logp, advantages, mask, eps_low,
                                           eps_high, ratio)
  per_token = -objective
  # With beta 0 a given reference is still measured against (a logged drift, no gradient).
  kl = k3_kl(logp, ref_logp) if ref_logp is not None else jnp.zeros_like(logp)
  if beta > 0:
    per_token = per_token + beta * kl
  num, den = masked_average(per_token, mask, average, max_len)
  m = jnp.asarray(mask, jnp.float32)
  tokens = jnp.maximum(m.sum(), 1.0)
  return {"loss": num / den,
          "kl": (kl * m).sum() / tokens,
          "clip_low": (low * m).sum() / tokens,
          "clip_high": (high * m).sum() / tokens}


@registry.OBJECTIVES.register("grpo")
def grpo_objective(eps_low: float = 0.2, eps_high: float = 0.2, beta: float = 0.0,
                   average: str = "sequence", max_len: int = 0, ratio: str = "token",
                   temperature: float = 1.0):
  """`outputs['logits'] [N, L, V]` scored on `batch['targets']` where `batch['loss_mask']`
  (the response tokens), with `batch['advantages'] [N]`, `batch['old_logp'] [N, L]` and, for
  beta > 0 (or a logged KL), `batch['ref_logp'] [N, L]`: the fields a rollout stage writes.
  The policy is the sampler's: no padding, logits over `temperature` (policy_logits)."""
  if average not in AVERAGES:
    raise ValueError(f"grpo: average {average!r}: expected one of {', '.join(AVERAGES)}")
  if ratio not in RATIOS:
    raise ValueError(f"grpo: ratio {ratio!r}: expected one of {', '.join(RATIOS)}")
  if average == "constant" and max_len <= 0:
    raise ValueError("grpo: average='constant' needs max_len > 0")
  if eps_low < 0 or eps_high < 0 or beta < 0 or temperature <= 0:
    raise ValueError("grpo: eps_low, eps_high and beta must be >= 0, temperature > 0")

  def loss_fn(outputs, batch):
    logits = policy_logits(outputs["logits"], temperature)
    mask = batch["loss_mask"]
    logp = token_logprobs(logits, batch["targets"])
    ref = batch.get("ref_logp")  # written by the rollout stage when it keeps a reference
    terms = grpo_terms(logp, batch["old_logp"], ref, batch["advantages"], mask,
                       eps_low=eps_low, eps_high=eps_high, beta=beta, average=average,
                       max_len=max_len, ratio=ratio)
    m = jnp.asarray(mask, jnp.float32)
    entropy = (jax.lax.stop_gradient(token_entropy(logits)) * m).sum() / jnp.maximum(
        m.sum(), 1.0)
    metrics = {k: v for k, v in terms.items() if k != "loss"}
    metrics["entropy"] = entropy
    return terms["loss"], metrics

  return loss_fn
