"""Few-shot linear probe on frozen image embeddings: closed-form ridge regression in JAX
(as big_vision's few-shot evaluator), k shots per class from the train split."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from vlx import registry
from vlx.evals.common import EvalContext, embed
from vlx.data import pipeline


def ridge_predict(x_train, y_train, x_test, num_classes: int, l2: float):
  x_train, x_test = jnp.asarray(x_train, jnp.float32), jnp.asarray(x_test, jnp.float32)
  mean, std = x_train.mean(0), x_train.std(0) + 1e-6
  xt, xs = (x_train - mean) / std, (x_test - mean) / std
  targets = 2.0 * jax.nn.one_hot(jnp.asarray(y_train), num_classes) - 1.0
  d = xt.shape[1]
  # Dual form when there are fewer examples than features (the few-shot case).
  if xt.shape[0] < d:
    alpha = jnp.linalg.solve(xt @ xt.T + l2 * jnp.eye(xt.shape[0]), targets)
    w = xt.T @ alpha
  else:
    w = jnp.linalg.solve(xt.T @ xt + l2 * jnp.eye(d), xt.T @ targets)
  return np.asarray(jnp.argmax(xs @ w, axis=-1))


@registry.EVALUATORS.register("linear_probe")
class LinearProbe:

  def __init__(self, ctx: EvalContext, train_split: str = "train", test_split: str = "test",
               shots=(1, 5, 10), l2: float = 1.0, pool: int = 4096, seed: int = 0):
    self.ctx, self.shots, self.l2 = ctx, tuple(shots), float(l2)
    train = pipeline.load_eval_arrays(ctx.handle, train_split, ctx.data_config.pp_eval,
                                      ctx.data_config.max_len, pool)
    self.test = pipeline.load_eval_arrays(ctx.handle, test_split, ctx.data_config.pp_eval,
                                          ctx.data_config.max_len)
    self.num_classes = len(ctx.handle.class_names) if ctx.handle.class_names else int(
        max(train["label"].max(), self.test["label"].max()) + 1)
    rng = np.random.default_rng(seed)
    self.index = {}
    for k in self.shots:
      idx = []
      for c in range(self.num_classes):
        members = np.flatnonzero(train["label"] == c)
        idx.extend(rng.permutation(members)[:k].tolist())
      self.index[k] = np.array(sorted(idx))
    needed = np.unique(np.concatenate(list(self.index.values())))
    self.train_images = train["image"][needed]
    self.train_labels = train["label"][needed]
    self.position = {int(j): i for i, j in enumerate(needed)}

  def __call__(self, params):
    feats = embed(self.ctx, params, "encode_image", self.train_images)
    test = embed(self.ctx, params, "encode_image", self.test["image"])
    out = {}
    for k, idx in self.index.items():
      rows = [self.position[int(j)] for j in idx]
      pred = ridge_predict(feats[rows], self.train_labels[rows], test, self.num_classes, self.l2)
      out[f"{k}shot"] = float(np.mean(pred == self.test["label"]))
    return out
