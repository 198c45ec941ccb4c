"""Ring (chunked) forms of the contrastive losses, for batches too big for [B, B] logits.

The dense losses (dense_contrastive.py) build the global [B, B] logit matrix, whose
memory grows with the square of the global batch. Here every device keeps its
local images and the text block travels once around a ring of the batch
devices (`jax.lax.ppermute`), so each device only ever holds one
[local_b, local_b] logit block: memory is O(local_b^2 + local_b * D) no matter
how many devices the batch is spread over.

Both losses are `jax.custom_vjp`s whose backward pass is a second ring that
recomputes the logit blocks. Plain autodiff through the forward loop would have
to keep every visiting text block (or logit block) for the backward pass,
which is O(B * D) per device again; recomputing costs one extra matmul per
block and keeps memory flat. The values and gradients equal the dense forms
(tested in tests/test_ring_losses.py).

The functions take and return GLOBAL arrays, are meant to run under `jit`
with the mesh set by `jax.set_mesh`; they compute the dense form when the mesh has
no batch axis larger than 1, and refuse a batch that does not split evenly over
the batch axes.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from vlx.objectives.dense_contrastive import sigmoid_dense, softmax_contrastive_dense
from vlx.parallel.mesh import BATCH_AXES  # the mesh axes the global batch is sharded over


def _batch_axes(batch_size):
  """The present batch axes of size > 1 of the ambient mesh, or None (no mesh, or no batch
  axis to ring over: one device holds the whole batch, and the dense form is the same)."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return None
  sizes = dict(zip(mesh.axis_names, mesh.axis_sizes))
  axes = tuple(a for a in BATCH_AXES if sizes.get(a, 1) > 1)
  if not axes:
    return None
  n = math.prod(sizes[a] for a in axes)
  if batch_size % n:
    # Going dense here would silently bring back the [B, B] logits the ring exists to avoid.
    raise ValueError(f"ring contrastive loss: batch {batch_size} does not split evenly over "
                     f"the {n} devices of mesh axes {axes}")
  return axes


def _shard_map(fn, axes, in_specs, out_specs):
  # check_vma=False: nothing differentiates through these bodies (the custom_vjp
  # sits outside), and every replicated output is produced by an explicit psum.
  return jax.shard_map(fn, mesh=jax.sharding.get_abstract_mesh(), in_specs=in_specs,
                       out_specs=out_specs, check_vma=False)


def _ring_loop(axes, body, fixed, moving):
  """Run `body(step, fixed, moving) -> (fixed, moving)` once per device of the ring.

  After each step `moving` is passed to the next device, so at step k a device
  holds the block that started k devices before it (step 0: its own block), and
  after the last step every block is back home.
  """
  n = jax.lax.axis_size(axes)
  perm = [(i, (i + 1) % n) for i in range(n)]

  def step(k, carry):
    fixed, moving = body(k, *carry)
    return fixed, jax.lax.ppermute(moving, axes, perm)

  return jax.lax.fori_loop(0, n, step, (fixed, moving))


def _f32(*xs):
  return tuple(jnp.asarray(x, jnp.float32) for x in xs)


# ------------------------------------------------------------------ softmax (CLIP / ALIGN)
#
# With S = exp(log_scale) * img @ txt.T and targets (1 - eps) * I + eps / B,
#   loss = 0.5 / B * [ sum_i lse_j S_ij + sum_j lse_i S_ij
#                      - 2 (1 - eps) sum_i S_ii - 2 eps / B * sum_ij S_ij ].
# The diagonal is local (image i and text i live on the same device) and
# sum_ij S_ij = scale * (sum_i img_i) . (sum_j txt_j), so only the two
# logsumexps need the ring: the image one stays put and is accumulated online,
# the text one travels with its text block.


def softmax_contrastive_ring(img, txt, log_scale, label_smoothing=0.0):
  """Symmetric InfoNCE equal to `softmax_contrastive_dense`, as a ring."""
  axes = _batch_axes(img.shape[0])
  if axes is None:
    return softmax_contrastive_dense(img, txt, log_scale, label_smoothing)
  img, txt, log_scale = _f32(img, txt, log_scale)
  return _softmax_ring(img, txt, log_scale, float(label_smoothing), axes)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _softmax_ring(img, txt, log_scale, eps, axes):
  return _softmax_fwd(img, txt, log_scale, eps, axes)[0]


def _softmax_fwd(img, txt, log_scale, eps, axes):
  batch = img.shape[0]

  def local(x, y, ls):
    s = jnp.exp(ls)
    neg_inf = jnp.full((x.shape[0],), -jnp.inf, jnp.float32)

    def body(_, row_lse, moving):
      y_blk, col_lse = moving
      logits = s * x @ y_blk.T
      row_lse = jnp.logaddexp(row_lse, jax.nn.logsumexp(logits, axis=1))
      col_lse = jnp.logaddexp(col_lse, jax.nn.logsumexp(logits, axis=0))
      return row_lse, (y_blk, col_lse)

    row_lse, (_, col_lse) = _ring_loop(axes, body, neg_inf, (y, neg_inf))
    diag = s * jnp.sum(x * y, axis=-1)
    total = s * jnp.dot(jax.lax.psum(x.sum(0), axes), jax.lax.psum(y.sum(0), axes))
    partial = row_lse.sum() + col_lse.sum() - 2.0 * (1.0 - eps) * diag.sum()
    loss = 0.5 / batch * (jax.lax.psum(partial, axes) - 2.0 * eps / batch * total)
    return loss, row_lse, col_lse

  emb, vec = P(axes, None), P(axes)
  loss, row_lse, col_lse = _shard_map(local, axes, (emb, emb, P()), (P(), vec, vec))(
      img, txt, log_scale)
  return loss, (img, txt, log_scale, row_lse, col_lse)


def _softmax_bwd(eps, axes, res, g):
  img, txt, log_scale, row_lse, col_lse = res
  batch = img.shape[0]

  def local(x, y, ls, row_lse, col_lse, g):
    # dloss/dS_ij = c * [softmax_row_i(j) + softmax_col_j(i) - 2(1-eps) d_ij - 2 eps/B].
    # The ring handles the two softmax terms; the constant terms are closed-form.
    s = jnp.exp(ls)
    c = 0.5 / batch * g

    def body(_, fixed, moving):
      dx, dls = fixed
      y_blk, col_blk, dy_blk = moving
      logits = s * x @ y_blk.T
      p = jnp.exp(logits - row_lse[:, None]) + jnp.exp(logits - col_blk[None, :])
      return (dx + p @ y_blk, dls + jnp.sum(p * logits)), (y_blk, col_blk, dy_blk + p.T @ x)

    (dx, dls), (_, _, dy) = _ring_loop(axes, body, (jnp.zeros_like(x), jnp.zeros(())),
                                       (y, col_lse, jnp.zeros_like(y)))
    x_sum, y_sum = jax.lax.psum(x.sum(0), axes), jax.lax.psum(y.sum(0), axes)
    diag = s * jnp.sum(x * y, axis=-1)
    total = s * jnp.dot(x_sum, y_sum)
    dx = c * s * (dx - 2.0 * (1.0 - eps) * y - 2.0 * eps / batch * y_sum)
    dy = c * s * (dy - 2.0 * (1.0 - eps) * x - 2.0 * eps / batch * x_sum)
    dls = c * (jax.lax.psum(dls - 2.0 * (1.0 - eps) * diag.sum(), axes)
               - 2.0 * eps / batch * total)
    return dx, dy, dls

  emb, vec = P(axes, None), P(axes)
  return _shard_map(local, axes, (emb, emb, P(), vec, vec, P()), (emb, emb, P()))(
      img, txt, log_scale, row_lse, col_lse, g)


_softmax_ring.defvjp(_softmax_fwd, _softmax_bwd)


# ------------------------------------------------------------------ sigmoid (SigLIP)
#
# loss = -1/B * sum_ij log_sigmoid(z_ij * S_ij), S = exp(log_scale) img @ txt.T + bias,
# z = +1 on the diagonal and -1 elsewhere. Every pair is independent, so each
# device just sums its blocks; the diagonal block is the one seen at step 0.


def _pair_labels(step, n):
  """+1 on the diagonal of a device's own block (ring step 0), -1 everywhere else."""
  return jnp.where((step == 0) & jnp.eye(n, dtype=bool), 1.0, -1.0)


def sigmoid_ring(img, txt, log_scale, bias):
  """SigLIP loss equal to `sigmoid_dense`, as a ring."""
  axes = _batch_axes(img.shape[0])
  if axes is None:
    return sigmoid_dense(img, txt, log_scale, bias)
  return _sigmoid_ring(*_f32(img, txt, log_scale, bias), axes)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _sigmoid_ring(img, txt, log_scale, bias, axes):
  return _sigmoid_fwd(img, txt, log_scale, bias, axes)[0]


def _sigmoid_fwd(img, txt, log_scale, bias, axes):
  batch = img.shape[0]

  def local(x, y, ls, b):
    s = jnp.exp(ls)

    def body(k, acc, y_blk):
      logits = s * x @ y_blk.T + b
      z = _pair_labels(k, x.shape[0])
      return acc + jnp.sum(jax.nn.log_sigmoid(z * logits)), y_blk

    acc, _ = _ring_loop(axes, body, jnp.zeros(()), y)
    return -jax.lax.psum(acc, axes) / batch

  emb = P(axes, None)
  loss = _shard_map(local, axes, (emb, emb, P(), P()), P())(img, txt, log_scale, bias)
  return loss, (img, txt, log_scale, bias)


def _sigmoid_bwd(axes, res, g):
  img, txt, log_scale, bias = res
  batch = img.shape[0]

  def local(x, y, ls, b, g):
    # dloss/dS_ij = -g/B * z_ij * sigmoid(-z_ij S_ij); accumulate the sums of
    # `z * sigmoid(-z S)` and scale once at the end.
    s = jnp.exp(ls)

    def body(k, fixed, moving):
      dx, dls, db = fixed
      y_blk, dy_blk = moving
      sim = s * x @ y_blk.T
      z = _pair_labels(k, x.shape[0])
      gz = z * jax.nn.sigmoid(-z * (sim + b))
      return (dx + gz @ y_blk, dls + jnp.sum(gz * sim), db + jnp.sum(gz)), (y_blk,
                                                                              dy_blk + gz.T @ x)

    zero = jnp.zeros(())
    (dx, dls, db), (_, dy) = _ring_loop(axes, body, (jnp.zeros_like(x), zero, zero),
                                        (y, jnp.zeros_like(y)))
    c = -g / batch
    return (c * s * dx, c * s * dy, c * jax.lax.psum(dls, axes), c * jax.lax.psum(db, axes))

  emb = P(axes, None)
  return _shard_map(local, axes, (emb, emb, P(), P(), P()), (emb, emb, P(), P()))(
      img, txt, log_scale, bias, g)


_sigmoid_ring.defvjp(_sigmoid_fwd, _sigmoid_bwd)
