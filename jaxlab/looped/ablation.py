"""Core slots deleted or swapped (spec §1.5 (d) 6), without touching the model's code.

Two ways, both as options of the analysis:

* in every iteration: :func:`permute_core` builds a new ``LoopedLM`` whose config has
  ``n_core = len(order)`` and whose core block ``k`` holds the parameters of the old block
  ``order[k]`` (delete: leave an index out; swap: exchange two). The result is an ordinary
  model, run by the model's own forward.
* in one iteration only: :func:`masked_forward` reruns the recurrence from the model's public
  pieces (embedding, prelude, :func:`jaxlab.looped.replay.replay_iteration`, coda tail) with a
  ``keep [I, n_core]`` table, a deleted call passing its input through; the table is a traced
  input, so every (iteration, slot) deletion shares one compiled program.

Slot indices here are core blocks (``model.core``); an inner stack (HRM) is left as it is.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxlab.looped.lens import coda_lens
from jaxlab.looped.replay import layout, replay_iteration
from jaxlab.models.looped.modeling import LoopedLM, abstract_looped
from jaxlab.models.paths import path_str


def permute_core(model: LoopedLM, order: Sequence[int]) -> LoopedLM:
  """A model whose core is ``[model.core[k] for k in order]`` (parameters copied by path).

  Raises:
    ValueError: an index out of range, or an empty order.
  """
  n = model.config.n_core
  order = [int(k) for k in order]
  if not order or any(k < 0 or k >= n for k in order):
    raise ValueError(f"permute_core: order {order} must be non-empty indices into the "
                     f"{n} core blocks")
  graphdef, abstract = nnx.split(abstract_looped(model.config.replace(n_core=len(order))))
  _, state = nnx.split(model)
  old = {path_str(kp): leaf for kp, leaf in jax.tree_util.tree_leaves_with_path(state)}

  def take(kp, _):
    parts = path_str(kp).split("/")
    if parts[0] == "core":
      parts[1] = str(order[int(parts[1])])
    return old["/".join(parts)]

  return nnx.merge(graphdef, jax.tree_util.tree_map_with_path(take, abstract))


def delete_slot(model: LoopedLM, slot: int) -> LoopedLM:
  """The model with core block ``slot`` removed from every iteration."""
  n = model.config.n_core
  if n < 2:
    raise ValueError("delete_slot: the core has a single block; deleting it leaves no core")
  return permute_core(model, [k for k in range(n) if k != slot])


def swap_slots(model: LoopedLM, i: int, j: int) -> LoopedLM:
  """The model with core blocks ``i`` and ``j`` exchanged in every iteration."""
  order = list(range(model.config.n_core))
  order[i], order[j] = order[j], order[i]
  return permute_core(model, order)


def _masked_logits(model: LoopedLM, tokens_bt, mask_bt, keep_ik, key):
  c = model.config
  dt = jnp.dtype(c.dtype)
  positions, cos, sin, allowed = layout(c.block_config, mask_bt)
  x = model.embed(tokens_bt) * jnp.asarray(c.embedding_scale, dt)
  for blk in model.prelude:
    x, _, _ = blk(x, cos, sin, allowed, None, None, None)
  e = x
  s = model.initial_state(e, positions, key)
  z = e * 0
  if model.inner_init_d is not None:
    z = z + model.inner_init_d[...].astype(dt)

  def body(carry, keep_k):
    s, z = carry
    s, z, _, _, _ = replay_iteration(model, s, z, e, cos, sin, allowed, keep_k=keep_k,
                                     attention=False)
    return (s, z), None

  (s, _), _ = jax.lax.scan(body, (s, z), keep_ik)
  return coda_lens(model, s, cos, sin, allowed, post=False)


@functools.partial(jax.jit, static_argnums=0)
def _masked_forward_jit(graphdef, state, tokens, mask, keep, key):
  return _masked_logits(nnx.merge(graphdef, state), tokens, mask, keep, key)


def masked_forward(model: LoopedLM, tokens_bt, mask_bt, keep_ik, key=None) -> jax.Array:
  """Logits ``[B, T, V]`` with core call ``(i, k)`` skipped wherever ``keep_ik[i, k]`` is
  False (jitted); ``keep_ik`` is ``[I, n_core]`` and sets the trip count ``I``. All True
  gives the model's own forward."""
  graphdef, state = nnx.split(model)
  return _masked_forward_jit(graphdef, state, jnp.asarray(tokens_bt),
                             jnp.asarray(mask_bt, bool), jnp.asarray(keep_ik, bool), key)


def mean_nll(logits_btv, targets_bt, valid_bt) -> jax.Array:
  """Mean negative log-likelihood of the targets over valid positions."""
  logp = jax.nn.log_softmax(logits_btv.astype(jnp.float32), -1)
  nll = -jnp.take_along_axis(logp, jnp.asarray(targets_bt)[..., None], -1)[..., 0]
  v = jnp.asarray(valid_bt, jnp.float32)
  return jnp.sum(nll * v) / jnp.maximum(v.sum(), 1.0)


@functools.partial(jax.jit, static_argnums=0)
def _masked_losses(graphdef, state, tokens, mask, keeps, targets, valid):
  model = nnx.merge(graphdef, state)
  return jax.lax.map(lambda kp: mean_nll(_masked_logits(model, tokens, mask, kp, None),
                                         targets, valid), keeps)


def ablation_table(model: LoopedLM, tokens_bt, mask_bt, targets_bt, valid_bt,
                   num_iterations: int) -> dict[str, np.ndarray]:
  """Loss changes when core slots are deleted or swapped.

  Every variant runs through one compiled program (:func:`masked_forward`'s, mapped over a
  stack of keep tables): deletions are keep tables, swaps are the parameters of
  :func:`swap_slots`' model (same structure) with nothing skipped.

  Returns:
    ``base_loss`` (the intact model at ``num_iterations``); ``delete_at [I, n_core]``: loss
    change with core call ``(i, k)`` skipped in iteration ``i`` only; ``delete_all
    [n_core]``: block ``k`` skipped in every iteration (the model of :func:`delete_slot`);
    ``swap_adjacent [n_core - 1]``: blocks ``k, k + 1`` exchanged in every iteration.
  """
  n_iter, n = int(num_iterations), model.config.n_core
  tokens, mask = jnp.asarray(tokens_bt), jnp.asarray(mask_bt, bool)
  targets, valid = jnp.asarray(targets_bt), jnp.asarray(valid_bt, bool)
  keeps = np.ones((1 + n_iter * n + n, n_iter, n), bool)  # intact, per (i, k), per k
  for i in range(n_iter):
    for k in range(n):
      keeps[1 + i * n + k, i, k] = False
  for k in range(n):
    keeps[1 + n_iter * n + k, :, k] = False

  def losses(m, kp):
    graphdef, state = nnx.split(m)
    return np.asarray(_masked_losses(graphdef, state, tokens, mask, jnp.asarray(kp), targets,
                                     valid))

  out = losses(model, keeps)
  base = float(out[0])
  at = out[1:1 + n_iter * n].reshape(n_iter, n) - base
  every = out[1 + n_iter * n:] - base if n > 1 else np.full(n, np.nan)
  swaps = np.array([losses(swap_slots(model, k, k + 1), keeps[:1])[0] - base
                    for k in range(n - 1)])
  return dict(base_loss=np.asarray(base), delete_at=at, delete_all=every,
              swap_adjacent=swaps)
