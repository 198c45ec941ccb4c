"""GRPO and its variants (vlx/objectives/policy_gradient.py) against numpy references and the
identities the method rests on: zero-variance groups teach nothing, one on-policy update is
REINFORCE with a group-mean baseline, clipping stops exactly the gradients it should, k3 is a
divergence, each averaging mode is its formula, and the sharded loss is the global one."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vlx import registry
from vlx.objectives import policy_gradient as pg

N, L, V, G = 8, 5, 7, 4


def _np_advantages(rewards, group, scale):
  r = np.asarray(rewards, np.float64).reshape(-1, group)
  a = r - r.mean(1, keepdims=True)
  if scale == "std":
    a = a / (r.std(1, keepdims=True) + 1e-6)
  return a.reshape(-1)


def _np_log_softmax(x):
  x = np.asarray(x, np.float64)
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _np_loss(logits, targets, old_logp, ref_logp, adv, mask, eps_low, eps_high, beta,
             average, max_len, ratio):
  """GRPO written out with loops, in float64."""
  logp_all = _np_log_softmax(logits)
  n, l = targets.shape
  logp = np.array([[logp_all[i, t, targets[i, t]] for t in range(l)] for i in range(n)])
  rows = []
  for i in range(n):
    toks = [t for t in range(l) if mask[i, t] > 0]
    seq_ratio = np.exp(np.mean([logp[i, t] - old_logp[i, t] for t in toks])) if toks else 1.0
    vals = []
    for t in toks:
      r = seq_ratio if ratio == "sequence" else np.exp(logp[i, t] - old_logp[i, t])
      obj = min(r * adv[i], np.clip(r, 1 - eps_low, 1 + eps_high) * adv[i])
      d = ref_logp[i, t] - logp[i, t]
      vals.append(-obj + beta * (np.exp(d) - d - 1))
    rows.append(vals)
  if average == "sequence":
    return np.mean([np.mean(v) if v else 0.0 for v in rows])
  total = sum(sum(v) for v in rows)
  if average == "token":
    return total / max(sum(len(v) for v in rows), 1)
  return total / (n * max_len)


def _example(seed=0, spread=0.3):
  rng = np.random.default_rng(seed)
  logits = rng.normal(size=(N, L, V)).astype(np.float32)
  logits[..., 0] = -1e9  # padding (id 0): never sampled, so not in the policy (policy_logits)
  targets = rng.integers(1, V, size=(N, L))
  mask = np.ones((N, L), np.float32)
  mask[1, 3:] = 0
  mask[5, 1:] = 0
  logp = np.asarray(pg.token_logprobs(jnp.asarray(logits), jnp.asarray(targets)))
  old = (logp + rng.normal(scale=spread, size=logp.shape)).astype(np.float32)
  ref = (logp + rng.normal(scale=spread, size=logp.shape)).astype(np.float32)
  rewards = rng.integers(0, 3, size=N).astype(np.float32)
  return logits, targets, mask, old, ref, rewards


def _batch(targets, mask, old, ref, adv):
  return {"targets": jnp.asarray(targets), "loss_mask": jnp.asarray(mask),
          "old_logp": jnp.asarray(old), "ref_logp": jnp.asarray(ref),
          "advantages": jnp.asarray(adv, jnp.float32)}


@pytest.mark.parametrize("scale", ["std", "none"])
def test_advantages_equal_numpy_reference(scale):
  rewards = np.array([1, 0, 0, 1, 2, 2, 2, 2, 0.5, 3, 1, 0], np.float32)
  got = np.asarray(pg.group_advantages(rewards, 4, scale))
  np.testing.assert_allclose(got, _np_advantages(rewards, 4, scale), rtol=1e-5, atol=1e-6)
  assert np.all(got[4:8] == 0)  # the group with identical rewards
  assert float(pg.zero_std_fraction(rewards, 4)) == pytest.approx(1 / 3)
  with pytest.raises(ValueError, match="scale"):
    pg.group_advantages(rewards, 4, "rank")


@pytest.mark.parametrize("average", ["sequence", "token", "constant"])
@pytest.mark.parametrize("ratio", ["token", "sequence"])
def test_loss_equals_reference_formula(average, ratio):
  logits, targets, mask, old, ref, rewards = _example()
  adv = _np_advantages(rewards, G, "std")
  kw = dict(eps_low=0.2, eps_high=0.28, beta=0.04, average=average, max_len=L, ratio=ratio)
  loss, metrics = registry.OBJECTIVES.get("grpo")(**kw)(
      {"logits": jnp.asarray(logits)}, _batch(targets, mask, old, ref, adv))
  want = _np_loss(logits, targets, old, ref, adv, mask, **kw)
  np.testing.assert_allclose(float(loss), want, rtol=1e-5, atol=1e-6)
  assert float(metrics["kl"]) > 0 and float(metrics["entropy"]) > 0
  clipped = float(metrics["clip_low"]) + float(metrics["clip_high"])
  assert 0 <= clipped < 1 and (clipped > 0 or ratio == "sequence")


def test_masked_average_modes_equal_their_formulas():
  x = np.arange(N * L, dtype=np.float32).reshape(N, L) / 10
  mask = np.zeros((N, L), np.float32)
  mask[0, :2] = 1
  mask[1, :5] = 1
  mask[2, :1] = 1  # rows 3.. have no tokens
  def avg(mode):
    num, den = pg.masked_average(x, mask, mode, 6)
    return float(num / den)
  seq = (x[0, :2].mean() + x[1, :5].mean() + x[2, :1].mean()) / N
  tok = (x[0, :2].sum() + x[1, :5].sum() + x[2, :1].sum()) / 8
  const = (x[0, :2].sum() + x[1, :5].sum() + x[2, :1].sum()) / (N * 6)
  assert avg("sequence") == pytest.approx(seq)
  assert avg("token") == pytest.approx(tok)
  assert avg("constant") == pytest.approx(const)
  with pytest.raises(ValueError, match="max_len"):
    pg.masked_average(x, mask, "constant", 0)
  with pytest.raises(ValueError, match="average"):
    pg.masked_average(x, mask, "group")


def _grad_wrt_logits(loss_fn, logits, batch):
  return jax.grad(lambda lg: loss_fn({"logits": lg}, batch)[0])(jnp.asarray(logits))


def test_group_with_identical_rewards_gives_zero_gradient():
  logits, targets, mask, _, _, _ = _example()
  rewards = np.array([1, 0, 1, 0, 2, 2, 2, 2], np.float32)  # second group: all equal
  adv = np.asarray(pg.group_advantages(rewards, G))
  logp = np.asarray(pg.token_logprobs(jnp.asarray(logits), jnp.asarray(targets)))
  grads = _grad_wrt_logits(registry.OBJECTIVES.get("grpo")(),
                           logits, _batch(targets, mask, logp, logp, adv))
  assert np.abs(np.asarray(grads[4:])).max() == 0.0
  assert np.abs(np.asarray(grads[:4])).max() > 1e-3


def test_one_on_policy_update_is_reinforce_with_group_mean_baseline():
  """beta = 0, old = the current policy: the clip is inactive at ratio 1, so the gradient is
  that of -mean_i (r_i - mean of i's group) * mean_t log p(o_it)."""
  logits, targets, mask, _, _, rewards = _example(seed=3)
  adv = np.asarray(pg.group_advantages(rewards, G, "none"))
  grpo = registry.OBJECTIVES.get("grpo")(average="sequence")

  def on_policy(lg):
    logp = pg.token_logprobs(lg, jnp.asarray(targets))
    batch = _batch(targets, mask, jax.lax.stop_gradient(logp), logp, adv)
    return grpo({"logits": lg}, batch)[0]

  def reinforce(lg):
    logp = pg.token_logprobs(lg, jnp.asarray(targets))
    m = jnp.asarray(mask)
    baseline = jnp.asarray(rewards).reshape(-1, G).mean(1).repeat(G)
    per_seq = (logp * m).sum(-1) / m.sum(-1)
    return -jnp.mean((jnp.asarray(rewards) - baseline) * per_seq)

  g1 = jax.grad(on_policy)(jnp.asarray(logits))
  g2 = jax.grad(reinforce)(jnp.asarray(logits))
  np.testing.assert_allclose(np.asarray(g1), np.asarray(g2), rtol=1e-5, atol=1e-7)
  assert np.abs(np.asarray(g2)).max() > 1e-3


def test_clipping_is_exact_after_several_updates():
  """Off-policy (old != current, as from the second update on a batch): a token whose ratio
  left [1 - eps_low, 1 + eps_high] in the advantage's direction gets no gradient, every other
  token gets exactly ratio * A / (its response's length) on its log-prob."""
  logits, targets, mask, old, _, rewards = _example(seed=5, spread=0.5)
  adv = np.asarray(pg.group_advantages(rewards, G))
  eps_low, eps_high = 0.1, 0.3
  grpo = registry.OBJECTIVES.get("grpo")(eps_low=eps_low, eps_high=eps_high)
  logp = np.asarray(pg.token_logprobs(jnp.asarray(logits), jnp.asarray(targets)))

  def loss_of_logp(lp):
    return pg.grpo_terms(lp, jnp.asarray(old), lp, jnp.asarray(adv), jnp.asarray(mask),
                         eps_low=eps_low, eps_high=eps_high)["loss"]
  got = np.asarray(jax.grad(loss_of_logp)(jnp.asarray(logp)))
  r = np.exp(logp - old)
  a = adv[:, None]
  bound = ((r < 1 - eps_low) & (a < 0)) | ((r > 1 + eps_high) & (a > 0))
  assert bound[mask > 0].any() and (~bound[mask > 0]).any()
  want = np.where(bound, 0.0, -r * a) * mask / mask.sum(1, keepdims=True) / N
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
  # and the objective's loss is the same function of the logits
  loss, _ = grpo({"logits": jnp.asarray(logits)}, _batch(targets, mask, old, old, adv))
  np.testing.assert_allclose(float(loss), float(loss_of_logp(jnp.asarray(logp))), rtol=1e-6)


def test_k3_is_nonnegative_and_zero_at_the_reference():
  rng = np.random.default_rng(0)
  logp = jnp.asarray(rng.normal(size=(64, 9)) * 3)
  ref = jnp.asarray(rng.normal(size=(64, 9)) * 3)
  assert float(pg.k3_kl(logp, ref).min()) >= 0.0
  assert float(jnp.abs(pg.k3_kl(logp, logp)).max()) == 0.0
  # and its gradient vanishes there, so beta > 0 does not pull a policy at the reference
  g = jax.grad(lambda lp: pg.k3_kl(lp, jax.lax.stop_gradient(lp)).sum())(logp)
  assert float(jnp.abs(g).max()) == 0.0


def test_dynamic_sampling_keeps_the_groups_whose_rewards_differ_first():
  rewards = np.array([1, 1, 1,  0, 1, 0,  2, 2, 2,  0, 0, 3,  5, 5, 5,  1, 0, 0], np.float32)
  flat = [0, 2, 4]  # groups with identical rewards
  def want(keep):
    order = [g for g in range(6) if g not in flat] + flat
    return np.concatenate([np.arange(3) + 3 * g for g in order[:keep]])
  for keep in (1, 3, 5, 6):
    got = np.asarray(pg.informative_groups_first(jnp.asarray(rewards), 3, keep))
    np.testing.assert_array_equal(got, want(keep))
  jitted = jax.jit(pg.informative_groups_first, static_argnums=(1, 2))
  np.testing.assert_array_equal(np.asarray(jitted(jnp.asarray(rewards), 3, 4)), want(4))
  for keep in (0, 7):
    with pytest.raises(ValueError, match="keep"):
      pg.informative_groups_first(jnp.asarray(rewards), 3, keep)


def test_beta_zero_with_a_reference_reports_the_kl_and_leaves_the_loss():
  """`rollout.track_kl`: the reference's KL is logged, the loss and its gradient are beta 0's."""
  logits, targets, mask, old, ref, rewards = _example(seed=3, spread=0.5)
  adv = np.asarray(pg.group_advantages(rewards, G))
  grpo = registry.OBJECTIVES.get("grpo")()
  with_ref = _batch(targets, mask, old, ref, adv)
  without = {k: v for k, v in with_ref.items() if k != "ref_logp"}
  f = lambda b: jax.value_and_grad(lambda x: grpo({"logits": x}, b), has_aux=True)(
      jnp.asarray(logits))
  (loss_a, metrics_a), grad_a = f(with_ref)
  (loss_b, metrics_b), grad_b = f(without)
  assert float(loss_a) == float(loss_b)
  np.testing.assert_array_equal(np.asarray(grad_a), np.asarray(grad_b))
  logp = np.asarray(pg.token_logprobs(jnp.asarray(logits), jnp.asarray(targets)))
  d = ref - logp
  want = ((np.exp(d) - d - 1) * mask).sum() / mask.sum()
  np.testing.assert_allclose(float(metrics_a["kl"]), want, rtol=1e-5)
  assert want > 1e-3 and float(metrics_b["kl"]) == 0.0
  with pytest.raises(ValueError, match="reference"):
    registry.OBJECTIVES.get("grpo")(beta=0.1)({"logits": jnp.asarray(logits)}, without)


def test_sharded_loss_and_gradients_equal_one_device():
  """The batch sharded over a 2x2x2 mesh (rows over all 8 devices) gives the loss and
  gradients of one device: numerator and denominator are reduced globally."""
  if len(jax.devices()) < 8:
    pytest.skip("needs 8 devices")
  logits, targets, mask, old, ref, rewards = _example(seed=7)
  adv = np.asarray(pg.group_advantages(rewards, G))
  batch = _batch(targets, mask, old, ref, adv)
  for average in pg.AVERAGES:
    grpo = registry.OBJECTIVES.get("grpo")(beta=0.1, average=average, max_len=L)
    f = jax.jit(jax.value_and_grad(lambda lg, b: grpo({"logits": lg}, b)[0]))  # noqa: B023
    one = f(jnp.asarray(logits), batch)
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:8]).reshape(2, 2, 2),
                             ("data", "fsdp", "model"))
    rows = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp",
                                                                         "model")))
    sharded = f(jax.device_put(jnp.asarray(logits), rows), jax.device_put(batch, rows))
    np.testing.assert_allclose(float(sharded[0]), float(one[0]), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(sharded[1]), np.asarray(one[1]), rtol=1e-5,
                               atol=1e-8)


def test_bad_settings_are_named():
  make = registry.OBJECTIVES.get("grpo")
  with pytest.raises(ValueError, match="average 'mean'"):
    make(average="mean")
  with pytest.raises(ValueError, match="ratio 'group'"):
    make(ratio="group")
  with pytest.raises(ValueError, match="max_len"):
    make(average="constant")
  with pytest.raises(ValueError, match=">= 0"):
    make(beta=-1.0)


def test_policy_is_the_samplers_padding_excluded_and_tempered():
  logits, targets, mask, old, ref, rewards = _example(seed=2)
  adv = np.asarray(pg.group_advantages(rewards, G))
  raw = logits.copy()
  raw[..., 0] = 5.0  # the model puts mass on padding: the sampler never draws it
  batch = _batch(targets, mask, old, ref, adv)
  hot = registry.OBJECTIVES.get("grpo")(beta=0.1, temperature=0.7)
  cold = registry.OBJECTIVES.get("grpo")(beta=0.1)
  scaled = np.where(np.arange(V) == 0, -1e9, raw / 0.7).astype(np.float32)
  np.testing.assert_allclose(float(hot({"logits": jnp.asarray(raw)}, batch)[0]),
                             float(cold({"logits": jnp.asarray(scaled)}, batch)[0]), rtol=1e-6)
  with pytest.raises(ValueError, match="temperature"):
    registry.OBJECTIVES.get("grpo")(temperature=0.0)
