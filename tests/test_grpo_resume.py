"""A GRPO stage (`configs/video_lmm.py:tiny,grpo`) killed with SIGKILL and restarted with the
same command logs what the uninterrupted run logs at every step: the rollouts (sampled inside
the step from the rng the train state carries), their rewards, the KL to the frozen reference
policy (task state in the checkpoint, not the resumed params) and the loss; the final params
are the same."""

import subprocess
import textwrap

import jax
import numpy as np
import pytest

from vlx_testlib import (REPO, checkpoint_steps, main_cmd, read_metrics, restore_state, run_main,
                         sigkill_after_checkpoint, subprocess_env, train_losses)

# Six steps, checkpoints every two, killed after the step-2 one: the restart resumes mid-run
# and logs at least two steps the uninterrupted run logged too. The run's cost is mostly its
# train step's compile (its reward callback keeps it out of the persistent compilation cache,
# so each of the three runs compiles it) and its steps: four prompts a batch (16 rollouts).
TOTAL, EVERY, KILL_AFTER = 6, 2, 2
# A reward a random policy's samples differ in (the verifiers give it 0 on every sample:
# zero advantages, no update, nothing a wrong resume could change), registered by a module
# of the user's own that `config.imports` names, as a researcher's reward would be.
REWARD_MODULE = textwrap.dedent("""
    from vlx import registry

    @registry.REWARDS.register("resume_test_chars")
    def chars(response, example):
      del example
      return len(response) / 50.0
""")
SMALL = ("--config.model.image.depth=1", "--config.model.image.width=32",
         "--config.model.image.num_heads=2", "--config.model.decoder.depth=1",
         "--config.model.decoder.width=32", "--config.model.decoder.head_dim=8",
         "--config.model.decoder.mlp_dim=64", "--config.rollout.max_len=12")
ARGS = (f"--config.total_steps={TOTAL}", f"--config.checkpoint_every={EVERY}",
        "--config.log_every=1", "--config.evals={}", "--config.init_from_run=",
        "--config.imports=('resume_test_reward',)",
        "--config.rollout.rewards={'resume_test_chars': 1.0, 'format': 0.2}",
        "--config.objectives.grpo.beta=0.05", "--config.batch_size=4", *SMALL)
VARIANT = "tiny,grpo,smoke"


def _per_step(workdir):
  """step -> the logged train / rollout scalars of that step."""
  return {r["step"]: {k: v for k, v in r.items() if k.split("/")[0] in ("train", "rollout")
                      and k != "train/examples_per_s" and "flops" not in k}
          for r in read_metrics(workdir) if "train/loss" in r}


@pytest.fixture(scope="module")
def reward_env(tmp_path_factory):
  path = tmp_path_factory.mktemp("reward_module")
  (path / "resume_test_reward.py").write_text(REWARD_MODULE)
  return subprocess_env(PYTHONPATH=str(path))


def _run(workdir, data_dir, env):
  return run_main("video_lmm", workdir, data_dir, *ARGS, variant=VARIANT, env=env, timeout=600)


def test_grpo_sigkill_then_restart_matches_uninterrupted_run(reward_env, tmp_path):
  data_dir = tmp_path / "data"
  _run(tmp_path / "uninterrupted", data_dir, reward_env)
  expected = _per_step(tmp_path / "uninterrupted")
  assert sorted(expected) == list(range(1, TOTAL + 1))
  # The run learns something a wrong resume would change: rewards differ within groups,
  # the policy moves away from the reference.
  assert all(row["train/rollout/zero_std_fraction"] < 1 for row in expected.values())
  assert expected[TOTAL]["train/grpo/kl"] > 0

  workdir = tmp_path / "killed"
  log_path = tmp_path / "killed.log"
  with open(log_path, "w") as log:
    proc = subprocess.Popen(main_cmd("video_lmm", workdir, data_dir, *ARGS, variant=VARIANT),
                            cwd=REPO, env=reward_env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    sigkill_after_checkpoint(proc, workdir, KILL_AFTER, 600, log_path=log_path)
  assert max(checkpoint_steps(workdir)) < TOTAL

  restarted = _run(workdir, data_dir, reward_env)
  assert "resumed from" in restarted.stderr
  train_losses(workdir)  # fails on a step logged twice
  got = _per_step(workdir)
  assert sorted(got) == sorted(expected)
  for step, row in expected.items():
    assert set(got[step]) == set(row), step
    for key, value in row.items():
      np.testing.assert_allclose(got[step][key], value, rtol=1e-6, atol=1e-7,
                                 err_msg=f"{key} at step {step}")
  # Same final state: params, and the reference policy the task keeps.
  final_a, final_b = restore_state(tmp_path / "uninterrupted", TOTAL), restore_state(workdir,
                                                                                     TOTAL)
  assert "reference" in final_a["extras"]
  for a, b in zip(jax.tree.leaves((final_a["params"], final_a["extras"])),
                  jax.tree.leaves((final_b["params"], final_b["extras"]))):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-6, atol=1e-7)
