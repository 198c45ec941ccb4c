"""The `grpo` task (vlx/families/video_lmm/grpo.py) inside the one train step: the sampler's
log-probs are the trainer's, the rollout block scores exactly the responses, a GRPO step on a
2x2x2 mesh equals one device (rollouts, rewards, loss and updated params), and the host-side
rewards are the verifiers'."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vlx import build, config_lib, registry
from vlx.data import pipeline
from vlx.data.sources import load_dataset
from vlx.families.video_lmm import verifiers as VF
from vlx.objectives import policy_gradient as pg
from vlx.parallel import mesh as mesh_lib
from vlx.token_ids import EOS_ID, PAD_ID
from vlx.train import trainer
from vlx.train.task import build_task
from vlx_testlib import REPO, assert_trees_close, mesh_of, one_train_step

# A reward that differs between a random policy's samples (the verifiers give such a policy 0
# everywhere: zero advantages, no gradient, nothing for the mesh comparison to compare).
@registry.REWARDS.register("test_response_chars")
def _response_chars(response, example):
  del example
  return len(response) / 50.0


# Identical rewards for every count question's group, differing ones elsewhere.
@registry.REWARDS.register("test_count_flat")
def _count_flat(response, example):
  return 0.0 if example.kind == "count" else len(response) / 50.0


SMALL = [("model.image.depth", "1"), ("model.image.width", "32"),
         ("model.image.num_heads", "2"), ("model.decoder.depth", "1"),
         ("model.decoder.width", "32"), ("model.decoder.head_dim", "8"),
         ("model.decoder.mlp_dim", "64"), ("rollout.max_len", "12")]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("rv"))
  config = config_lib.load_config_file(f"{REPO}/configs/video_lmm.py:tiny,grpo,smoke")
  config_lib.apply_overrides(config, SMALL + [("data.source.data_dir", data_dir)])
  with config.unlocked():
    config.rollout.rewards.test_response_chars = 1.0
  handle = load_dataset(config.data)
  rows = next(iter(pipeline.iter_split(handle, "train", config.data.pp_train, 8, 8, 0)))
  batch = pipeline.stack(rows, list(config.data["keys"]))
  model = build.build_model(config)
  return config, model, batch, handle


def test_sampler_logp_equals_trainer_logp_and_block_scores_the_response(setup):
  config, model, batch, handle = setup
  task = build_task(config, model)
  params = jax.jit(lambda r: model.init(r, {k: v[:1] for k, v in batch.items()},
                                        train=False)["params"])(jax.random.key(0))
  out = jax.jit(task.prepare)(params, task.init_extras(params), batch, jnp.int32(0),
                              jax.random.key(1))
  n = 8 * config.rollout.group_size
  assert out["text_in"].shape[0] == n and out["advantages"].shape == (n,)
  logits = jax.jit(lambda p, b: model.apply({"params": p}, b, train=False)["logits"])(params,
                                                                                   out)
  lp = pg.token_logprobs(pg.policy_logits(logits), out["targets"])
  m = np.asarray(out["loss_mask"]) > 0
  assert m.sum() > n  # responses of several tokens
  np.testing.assert_allclose(np.asarray(lp)[m], np.asarray(out["old_logp"])[m], atol=1e-5)
  # the reference (the start policy, kept for the KL) scores them the same at the start
  np.testing.assert_allclose(np.asarray(out["ref_logp"])[m], np.asarray(out["old_logp"])[m],
                             atol=1e-5)
  # the scored tokens are the response: prompt positions are never scored, and each row's
  # scored targets run up to its EOS (or the length limit) with padding after
  q = batch["prompt"].shape[1]
  assert not m[:, :q - 1].any()
  targets = np.asarray(out["targets"])
  for row, mask in zip(targets, m):
    scored = row[mask]
    assert PAD_ID not in scored
    assert EOS_ID not in scored[:-1]
  # group-normalised advantages of the verifiers' rewards
  np.testing.assert_allclose(np.asarray(out["advantages"]),
                             np.asarray(pg.group_advantages(out["reward"], 4)), atol=1e-6)


def test_dynamic_sampling_trains_on_groups_whose_rewards_differ(setup):
  """`rollout.keep_prompts`: of the batch's 8 prompts, 4 groups go on to the loss, none of
  them a count question's (identical rewards: no gradient) while 4 others are there; the
  sampled groups' statistics are logged beside the trained ones'."""
  config, model, batch, _ = setup
  kinds = np.asarray(batch["kind_id"])
  count = 0  # kind ids: count, order, direction, span
  assert 1 <= (kinds == count).sum() <= 4, kinds  # the fixture's batch allows the check
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.rollout.keep_prompts = 4
    config.rollout.rewards = {"test_count_flat": 1.0}
    config.rollout.track_kl = False
  task = build_task(config, model)
  params = jax.jit(lambda r: model.init(r, {k: v[:1] for k, v in batch.items()},
                                        train=False)["params"])(jax.random.key(0))
  out = jax.jit(task.prepare)(params, task.init_extras(params), batch, jnp.int32(0),
                              jax.random.key(1))
  g = config.rollout.group_size
  reward = np.asarray(out["reward"]).reshape(4, g)
  assert out["text_in"].shape[0] == 4 * g
  assert (reward.max(1) - reward.min(1) > 1e-6).all(), reward
  np.testing.assert_allclose(np.asarray(out["advantages"]),
                             np.asarray(pg.group_advantages(out["reward"], g)), atol=1e-6)
  np.testing.assert_allclose(np.asarray(out["sampled_zero_std"]), (kinds == count).mean())
  logits = jax.jit(lambda p, b: model.apply({"params": p}, b, train=False)["logits"])(params,
                                                                                   out)
  _, metrics = task.loss({"logits": logits}, out)
  assert float(metrics["rollout/zero_std_fraction"]) == 0.0
  assert float(metrics["rollout/sampled_zero_std_fraction"]) == pytest.approx(
      (kinds == count).mean())


def test_host_rewards_are_the_verifiers(setup):
  config, model, batch, handle = setup
  task = build_task(config, model)
  # the program's own responses, tokenized as the model would write them
  ids = []
  for i in range(8):
    kind = int(batch["kind_id"][i])
    answer = handle.tokenizer.decode(batch["answer_ids"][i:i + 1])[0]
    text = f"<think>seen.</think><answer>{answer}</answer>"
    ids.append(handle.tokenizer.encode([text], 40)[0])
    assert kind in range(4)
  parts = task.host_rewards(np.stack(ids), batch["kind_id"], batch["answer_ids"],
                            batch["option_ids"], batch["span"], num_frames=8)
  names = list(task.reward_names)
  assert parts.shape == (8, len(names)) and "temporal_iou" in names
  np.testing.assert_array_equal(parts[:, names.index("accuracy")], 1.0)
  np.testing.assert_array_equal(parts[:, names.index("format")], 1.0)
  bad = task.host_rewards(np.stack(ids)[:, ::-1].copy(), batch["kind_id"], batch["answer_ids"],
                          batch["option_ids"], batch["span"], num_frames=8)
  assert bad[:, names.index("accuracy")].max() == 0.0
  assert VF.accuracy("", None) == 0.0


def test_grpo_step_on_2x2x2_mesh_equals_one_device(setup):
  config, model, batch, _ = setup
  tx = optax.sgd(1.0)
  rules = mesh_lib.rules_from_config(config.sharding)
  state, _ = trainer.create_state(config, model, tx, mesh_of(1, 1, 1, 1), rules)
  state = jax.device_get(state)
  p1, m1 = one_train_step(config, model, state, mesh_of(1, 1, 1, 1), tx, batch)
  p8, m8 = one_train_step(config, model, state, mesh_of(2, 2, 2, 8), tx, batch)
  for key in ("train/loss", "train/rollout/reward", "train/rollout/response_length",
              "train/grpo/entropy"):
    np.testing.assert_allclose(m8[key], m1[key], rtol=1e-5, atol=1e-7, err_msg=key)
  assert_trees_close(p1, p8, atol=2e-5, rtol=1e-4, what="after step")
  assert float(m1["train/rollout/zero_std_fraction"]) < 1.0
  moved = max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(state.params),
                                                          jax.tree.leaves(p1)))
  assert moved > 1e-4


def test_evaluator_draws_differ_and_read_the_split_once_for_all(setup):
  """num_samples > 1: every draw its own rng (one compiled program, the draw index in the
  batch), so the samples of test-time scaling are not one sample repeated."""
  from vlx.evals.common import EvalContext  # pylint: disable=g-import-not-at-top
  from vlx.families.video_lmm.evals import ReasoningQA  # pylint: disable=g-import-not-at-top
  config, model, batch, handle = setup
  params = jax.jit(lambda r: model.init(r, {k: v[:1] for k, v in batch.items()},
                                        train=False)["params"])(jax.random.key(0))
  ctx = EvalContext(model=model, mesh=mesh_of(1, 1, 1, 1), handle=handle,
                    data_config=config.data, batch_size=8)
  ev = ReasoningQA(ctx, 16, 12, num_samples=3, limit=8)
  reads = []
  real_map = ev.reader.map
  ev.reader.map = lambda fn: reads.append(1) or real_map(fn)
  draws, truth, frames = ev.responses(params, 3)
  assert len(reads) == 1 and frames == 8 and len(truth["kind"]) == 8
  ids = [d[1] for d in draws]
  assert not np.array_equal(ids[0], ids[1]) and not np.array_equal(ids[1], ids[2])
  again, _, _ = ev.responses(params, 2)
  np.testing.assert_array_equal(again[1][1], ids[1])  # the same draw is the same sample


def test_evaluator_reads_the_test_questions_at_more_frames(setup, monkeypatch):
  """More frames at test time (`split="test_16f"`): the same questions, each clip read at 16
  frames, marked by their time in the 8-frame clip; spans still answered in the clip's 8."""
  from vlx.evals.common import EvalContext  # pylint: disable=g-import-not-at-top
  from vlx.families.video_lmm.evals import ReasoningQA  # pylint: disable=g-import-not-at-top
  config, model, batch, handle = setup
  params = jax.jit(lambda r: model.init(r, {k: v[:1] for k, v in batch.items()},
                                        train=False)["params"])(jax.random.key(0))
  ctx = EvalContext(model=model, mesh=mesh_of(2, 2, 2, 8), handle=handle,
                    data_config=config.data, batch_size=8)
  ev = ReasoningQA(ctx, 16, 12, split="test_16f", limit=8)
  draws, truth, frames = ev.responses(params)
  assert frames == 16 and ev.clip_frames == 8
  plain = ReasoningQA(ctx, 16, 12, limit=8).responses(params)[1]
  np.testing.assert_array_equal(truth["question"], plain["question"])
  np.testing.assert_array_equal(truth["span"], plain["span"])
  assert len(draws[0][0]) == 8
  from vlx.families.video_lmm import evals as E  # pylint: disable=g-import-not-at-top
  scored_at, real = [], E.examples_of
  monkeypatch.setattr(E, "examples_of", lambda t, n: scored_at.append(n) or real(t, n))
  metrics = ev(params)
  assert metrics["num_questions"] == 8 and 0.0 <= metrics["accuracy"] <= 1.0
  assert scored_at == [8]  # the clip's frames, not the 16 it was read at
