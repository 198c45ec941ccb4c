"""The `grpo` task: GRPO from verifiable rewards inside vlx's one train step.

The step calls `prepare` before the loss (vlx/train/task.py); here that is the rollout stage,
all inside the jitted step:

  1. every prompt of the batch (P prompts: video + question) is repeated G times
     (`rollout.group_size`), a global [P * G] rollout batch sharded like any batch;
  2. the KV-cached sampler of the unified family draws one response per row from the current
     policy (`params`), returning each token's log-prob under the distribution it was drawn
     from (the behaviour policy's `old_logp`; the trainer's forward gives the same numbers);
  3. the responses are verified on the host (`jax.pure_callback`: ids -> text -> the
     registered rewards of `rollout.rewards`, weighted), then group-normalised into advantages;
  4. with `rollout.keep_prompts` (DAPO's dynamic sampling), only that many groups go on, those
     whose rewards differ first: more prompts are sampled than trained on;
  5. with `beta > 0` (or `rollout.track_kl`, to log the drift without a KL term) the frozen
     reference policy (the params the run started from, kept in the task's state) scores the
     responses teacher-forced (`ref_logp`).

The batch the loss sees is then [prompt; response] text blocks with the response tokens scored
(`loss_mask`), and the `grpo` objective (vlx/objectives/policy_gradient.py) is the loss. The
sampler's rng comes from the step's rng, which the train state carries: a resumed run draws the
rollouts it would have drawn. Logged next to the loss: the mean reward and each reward's, the
share of groups with identical rewards, the response length.

One update per batch of rollouts (on-policy: the ratio is 1 at the update and clipping only
bites through `ratio="sequence"` or later updates; the clipped path is tested directly).
Single-process: the host callback sees the whole rollout batch.
"""

from __future__ import annotations

from typing import Dict

import jax
import jax.numpy as jnp
import numpy as np

from vlx import decode as decode_lib
from vlx import registry
from vlx.data import sources
from vlx.data.tokenizer import load_tokenizer
from vlx.families.unified import generate as gen
from vlx.families.video_lmm import reasoning_videos as RV
from vlx.families.video_lmm import tasks as T
from vlx.objectives import policy_gradient as pg
from vlx.token_ids import EOS_ID, PAD_ID
from vlx.train.task import ModelTask

TRUTH_KEYS = ("kind_id", "answer_ids", "option_ids", "span")
PROMPT_KEYS = ("video", "prompt", "prompt_mask", "prompt_ar")


def response_block(prompt, prompt_mask, prompt_ar, ids, logp):
  """The training block of [prompt; sampled response]: `prompt [N, Q]` ends with the token the
  response follows; `ids [N, A]` the response (EOS kept, padding after), `logp [N, A]` its
  sampled log-probs. Position Q - 1 + j predicts ids[:, j]."""
  n, q = prompt.shape
  real = ids != PAD_ID
  zeros = jnp.zeros((n, q - 1))
  return {
      "text_in": jnp.concatenate([prompt, ids[:, :-1]], axis=1).astype(jnp.int32),
      "mask_ar": jnp.concatenate([jnp.asarray(prompt_ar, jnp.int32),
                                  jnp.ones_like(ids[:, :-1], jnp.int32)], axis=1),
      "input_mask": jnp.concatenate([jnp.asarray(prompt_mask, bool), real[:, :-1]], axis=1),
      "targets": jnp.concatenate([zeros.astype(jnp.int32), ids], axis=1).astype(jnp.int32),
      "loss_mask": jnp.concatenate([zeros, real.astype(jnp.float32)], axis=1),
      "old_logp": jnp.concatenate([zeros, jnp.where(real, logp, 0.0)], axis=1),
  }


@registry.TASKS.register("grpo")
class GRPOTask(ModelTask):
  """Rollouts, verification and advantages in `prepare`; the config's objectives (`grpo`) as
  the loss, with the rollouts' statistics logged beside it."""
  accumulates = False
  # Options added after the first GRPO runs, at the values that do what those runs did: a
  # workdir written before them resumes and evaluates.
  added_config_keys = {"rollout.keep_prompts": 0, "rollout.track_kl": False}

  def __init__(self, config, model):
    super().__init__(config, model)
    r = config.rollout
    self.group = int(r.group_size)
    if self.group < 2:
      raise ValueError("rollout.group_size must be >= 2: advantages are relative to a group")
    self.temperature = float(r.get("temperature", 1.0))
    grpo_kw = dict(config.objectives.get("grpo", {}))
    if float(grpo_kw.get("temperature", 1.0)) != self.temperature:
      raise ValueError("objectives.grpo.temperature must equal rollout.temperature: the loss "
                       "scores the distribution the responses were drawn from")
    self.beta = float(grpo_kw.get("beta", 0.0))
    # The frozen reference is kept for the KL term, or (beta 0) to log the drift from it.
    self.keep_reference = self.beta > 0 or bool(r.get("track_kl", False))
    self.scale = str(r.get("advantage_scale", "std"))
    # Dynamic sampling: of the batch's prompts, train on `keep_prompts` groups, those whose
    # rewards differ first (0: every prompt's group).
    self.keep = int(r.get("keep_prompts", 0))
    # Ids from text_size up are not text (an imported PaliGemma's location tokens); the
    # tokenizer's EOS ends a response (vlx's EOS_ID, or an imported tokenizer's own).
    self.text_size = int(r.text_size)
    spec = config.data.get("tokenizer")
    # An imported tokenizer is read once, here; the dataset's own is read with the dataset
    # by the first host_rewards call.
    self._tokenizer = load_tokenizer(dict(spec)) if spec else None
    self.eos = int(getattr(self._tokenizer, "eos_id", EOS_ID)) if spec else EOS_ID
    self.reward_names = tuple(r.rewards.keys())
    self.reward_weights = jnp.asarray([float(r.rewards[k]) for k in self.reward_names])
    self.reward_fns = [registry.REWARDS.get(k) for k in self.reward_names]
    self.sample = gen.make_generate_fn(
        model, decode_lib.DecodeConfig(method="sample", max_len=int(r.max_len),
                                       temperature=self.temperature), self.eos,
        return_logp=True)
    self._data_config = config.data
    self._objectives = self.loss
    self.loss = self._loss

  # ---- the task's state: the frozen reference policy (for the KL term or its log)
  def init_extras(self, params):
    return {"reference": params} if self.keep_reference else {}

  def extras_shardings(self, param_shardings):
    return {"reference": param_shardings} if self.keep_reference else {}

  # ---- the rollout stage
  def host_rewards(self, ids, kind_id, answer_ids, option_ids, span, num_frames: int):
    """On the host: response ids -> text -> each registered reward, [N, R] float32."""
    if self._tokenizer is None:
      self._tokenizer = sources.load_dataset(self._data_config).tokenizer
    ids = np.asarray(ids)
    texts = self._tokenizer.decode(np.where(ids < self.text_size, ids, 0))
    examples = T.examples_from_truth(self._tokenizer, kind_id, answer_ids, option_ids, span,
                                     num_frames)
    return np.asarray([[fn(t, e) for fn in self.reward_fns] for t, e in zip(texts, examples)],
                      np.float32)

  def prepare(self, params, extras, batch, step, rng):
    del step
    rows = {k: jnp.repeat(batch[k], self.group, axis=0) for k in PROMPT_KEYS + TRUTH_KEYS}
    ids, logp = self.sample(params, *(rows[k] for k in PROMPT_KEYS), rng)
    n = ids.shape[0]
    # spans count in the clip's frames, whatever number of frames the batch reads it at
    parts = jax.pure_callback(
        lambda *a: self.host_rewards(*a, num_frames=RV.CLIP_FRAMES),
        jax.ShapeDtypeStruct((n, len(self.reward_names)), jnp.float32),
        ids, *(rows[k] for k in TRUTH_KEYS), vmap_method="sequential")
    reward = parts @ self.reward_weights
    out = {"video": rows["video"],
           **response_block(rows["prompt"], rows["prompt_mask"], rows["prompt_ar"], ids, logp),
           "advantages": pg.group_advantages(reward, self.group, self.scale),
           "reward": reward, "reward_parts": parts}
    if self.keep:
      keep = pg.informative_groups_first(reward, self.group, self.keep)
      out = {k: v[keep] for k, v in out.items()}
      # what was sampled, for the curves (the kept groups are a biased choice of it)
      out["sampled_reward"] = jnp.full(keep.shape, reward.mean())
      out["sampled_zero_std"] = jnp.full(keep.shape, pg.zero_std_fraction(reward, self.group))
    if self.keep_reference:  # the reference scores the responses with the trainer's forward
      logits = self.model.apply({"params": extras["reference"]}, out, train=False)["logits"]
      out["ref_logp"] = pg.token_logprobs(pg.policy_logits(logits, self.temperature),
                                          out["targets"])
    return out

  def _loss(self, outputs, batch):
    loss, metrics = self._objectives(outputs, batch)
    rollout: Dict[str, jax.Array] = {
        "reward": batch["reward"].mean(),
        "zero_std_fraction": pg.zero_std_fraction(batch["reward"], self.group),
        "response_length": batch["loss_mask"].sum(axis=1).mean(),
    }
    for i, name in enumerate(self.reward_names):
      rollout[f"reward_{name}"] = batch["reward_parts"][:, i].mean()
    if self.keep:  # the trained groups' statistics above; the sampled ones' here
      rollout["sampled_reward"] = batch["sampled_reward"].mean()
      rollout["sampled_zero_std_fraction"] = batch["sampled_zero_std"].mean()
    return loss, {**metrics, **{f"rollout/{k}": v for k, v in rollout.items()}}
