"""Few-shot linear probe on frozen image embeddings: closed-form ridge regression in JAX
(as big_vision's few-shot evaluator), k shots per class from the train split."""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from vlx import registry
from vlx.evals.common import EvalContext, SplitReader
from vlx.evals.zeroshot import embed_with_labels


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
  """k-shot ridge probes: the shots are drawn once from the first `pool` records of the train
  split (default `data.train_split`), scored on the test split (default `data.test_split`).
  Both are streamed: only the chosen shots' images are embedded, one batch at a time."""

  def __init__(self, ctx: EvalContext, train_split: Optional[str] = None,
               test_split: Optional[str] = None, shots=(1, 5, 10), l2: float = 1.0,
               pool: int = 4096, seed: int = 0):
    self.ctx, self.shots, self.l2, self.seed = ctx, tuple(shots), float(l2), seed
    self.pool = SplitReader(ctx, train_split or ctx.data_config.train_split, limit=pool)
    self.test = SplitReader(ctx, test_split or ctx.data_config.test_split)
    self.index = self.train = None

  def _choose_shots(self, test_labels: np.ndarray):
    """{k: positions among the pool's readable records} and a reader of the records needed."""
    parts = self.pool.map(lambda rows: [(int(r.get("label", -1)), r["_index"]) for r in rows])
    labels = np.asarray([y for p in parts for y, _ in p], np.int32)  # the images are dropped
    records = [i for p in parts for _, i in p]
    names = self.ctx.handle.class_names
    self.num_classes = len(names) if names else int(max(labels.max(), test_labels.max()) + 1)
    rng = np.random.default_rng(self.seed)
    self.index = {}
    for k in self.shots:
      idx = []
      for c in range(self.num_classes):
        members = np.flatnonzero(labels == c)
        idx.extend(rng.permutation(members)[:k].tolist())
      self.index[k] = np.array(sorted(idx))
    needed = np.unique(np.concatenate(list(self.index.values())))
    self.train_labels = labels[needed]
    self.position = {int(j): i for i, j in enumerate(needed)}
    self.train = SplitReader(self.ctx, self.pool.split, indices=[records[j] for j in needed],
                             seed=self.pool.seed)

  def __call__(self, params):
    test, test_labels = embed_with_labels(self.test, params)
    if self.index is None:
      self._choose_shots(test_labels)
    feats = np.concatenate(self.train.map(
        lambda rows: self.train.embed(params, "encode_image", rows)))
    out = {}
    for k, idx in self.index.items():
      rows = [self.position[int(j)] for j in idx]
      pred = ridge_predict(feats[rows], self.train_labels[rows], test, self.num_classes, self.l2)
      out[f"{k}shot"] = float(np.mean(pred == test_labels))
    if self.test.skipped:
      out["skipped_records"] = self.test.skipped
    return out
