"""Helpers shared by the backend adapters and the wrappers (not public API)."""

from __future__ import annotations

import difflib
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from jax import custom_batching

from jaxlab.envs.base import EnvState


def _strong(x: Any) -> Any:
  """``x`` as a jax array that is not weakly typed (PRNG key arrays pass unchanged)."""
  x = jnp.asarray(x)
  if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) or not x.weak_type:
    return x
  return x.astype(x.dtype)


def _like(x: Any, ref: jax.Array) -> Any:
  """``x`` as an array with the dtype of ``ref``."""
  x = jnp.asarray(x)
  if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    return x
  return x.astype(ref.dtype)


def first_state(backend: Any, obs: jax.Array, key: jax.Array) -> EnvState:
  """The ``EnvState`` right after a reset: zero reward, no flags, empty statistics.

  Backend leaves become strongly typed arrays: gymnax resets return Python ints and bools
  (``time=0``) that its steps return as int32 arrays, and a ``lax.scan`` carry or the
  auto-reset select needs identical types on both paths.
  """
  obs = jnp.asarray(obs, jnp.float32)
  return EnvState(
      backend=jax.tree.map(_strong, backend),
      obs=obs,
      reward=jnp.zeros((), jnp.float32),
      terminated=jnp.zeros((), jnp.bool_),
      truncated=jnp.zeros((), jnp.bool_),
      final_obs=obs,
      episode_return=jnp.zeros((), jnp.float32),
      episode_length=jnp.zeros((), jnp.int32),
      done_return=jnp.zeros((), jnp.float32),
      done_length=jnp.zeros((), jnp.int32),
      key=key,
      extras={},
  )


def next_state(
    prev: EnvState,
    *,
    backend: Any,
    obs: jax.Array,
    reward: jax.Array,
    terminated: jax.Array,
    key: jax.Array,
) -> EnvState:
  """The ``EnvState`` after one step of an adapter, with the episode statistics advanced.

  Adapters never truncate (that is ``TimeLimit``'s job), so ``truncated`` is False. The new
  backend's leaves are cast to the dtypes of ``prev.backend`` (see ``first_state``).
  """
  backend = jax.tree.map(_like, backend, prev.backend)
  obs = jnp.asarray(obs, jnp.float32)
  reward = jnp.asarray(reward, jnp.float32).reshape(())
  terminated = jnp.asarray(terminated).reshape(()).astype(jnp.bool_)
  return with_episode_stats(
      prev,
      prev.replace(
          backend=backend,
          obs=obs,
          reward=reward,
          terminated=terminated,
          truncated=jnp.zeros((), jnp.bool_),
          final_obs=obs,
          key=key,
      ),
      reward,
  )


def with_episode_stats(prev: EnvState, state: EnvState, reward: jax.Array) -> EnvState:
  """Sets the running and finished-episode statistics of ``state`` from ``prev``.

  Every layer that decides what one agent step is (an adapter, ``ActionRepeat``) or whether
  the episode ended (``TimeLimit``) calls this, so the statistics are right whatever the
  order in which wrappers are stacked.

  Args:
    prev: the state the step started from.
    state: the state the step reached, with ``terminated``/``truncated`` final.
    reward: () float32, reward of the whole agent step.
  """
  episode_return = prev.episode_return + reward
  episode_length = prev.episode_length + 1
  done = jnp.logical_or(state.terminated, state.truncated)
  return state.replace(
      episode_return=episode_return,
      episode_length=episode_length,
      done_return=jnp.where(done, episode_return, 0.0).astype(jnp.float32),
      done_length=jnp.where(done, episode_length, 0).astype(jnp.int32),
  )


def shared_leaves(env: Any) -> Any:
  """Which leaves of ``env``'s state are shared by a whole batch rather than per env.

  MJX's warp implementation keeps its contact and constraint buffers once for all worlds of
  a batch: ``jax.vmap(env.reset)`` returns them without the batch axis. They cannot be
  selected per env; they are recomputed at every physics step, so keeping the stepped value
  when an env resets is right (Playground's own auto-reset does the same).

  Returns:
    A pytree of bools shaped like an ``EnvState`` of ``env`` (True = shared), or None when
    no leaf is shared (every backend except MJX-warp).
  """
  key = jax.random.PRNGKey(0)
  one = jax.eval_shape(env.reset, key)
  two = jax.eval_shape(jax.vmap(env.reset), jax.random.split(key, 2))
  mask = jax.tree.map(lambda a, b: tuple(b.shape) != (2,) + tuple(a.shape), one, two)
  return mask if any(jax.tree.leaves(mask)) else None


def tree_select(pred: jax.Array, on_true: Any, on_false: Any, shared: Any = None) -> Any:
  """``on_true if pred else on_false`` leaf by leaf, for a scalar ``pred``.

  ``lax.select`` rather than ``jnp.where``: it also accepts typed PRNG key arrays, which
  backends keep in their states. Leaves marked in ``shared`` (see ``shared_leaves``) are
  always taken from ``on_false``.
  """
  if shared is None:
    return jax.tree.map(lambda a, b: jax.lax.select(pred, a, b), on_true, on_false)
  return jax.tree.map(lambda a, b, s: b if s else jax.lax.select(pred, a, b),
                      on_true, on_false, shared)


def maybe_apply(pred: jax.Array, fn: Callable[[Any], Any], operand: Any, *,
                lazy: bool = True, shared: Any = None) -> Any:
  """``fn(operand) if pred else operand``, evaluating ``fn`` only when some ``pred`` holds.

  ``lax.cond`` alone is not enough: under ``vmap`` with a batched predicate it becomes a
  select that runs ``fn`` for every element at every call. For auto-reset that would run the
  backend's reset at every step (CheetahRun's reset simulates 200 physics steps), so the
  batching rule here instead runs the batched ``fn`` once if *any* element needs it and
  selects per element. The rule calls ``maybe_apply`` again, so nested ``vmap`` (seeds x envs)
  keeps the any-reduction at every level.

  Args:
    pred: () bool.
    fn: maps ``operand`` to a pytree of the same structure, shapes and dtypes. It must not
      close over traced values: pass them inside ``operand``.
    operand: a pytree of arrays.
    lazy: False computes ``fn`` at every call and selects (for comparison and debugging).
    shared: None, or a pytree of bools like ``operand`` marking leaves shared by a batch
      (``shared_leaves``); those keep the value of ``operand``.

  Returns:
    A pytree like ``operand``.
  """
  shared_mask = shared if shared is not None else jax.tree.map(lambda _: False, operand)

  @custom_batching.custom_vmap
  def apply(pred, operand):
    if lazy:
      new = jax.lax.cond(pred, fn, lambda x: x, operand)
      return jax.tree.map(lambda n, x, s: x if s else n, new, operand, shared_mask)
    return tree_select(pred, fn(operand), operand, shared)

  @apply.def_vmap
  def _rule(axis_size, in_batched, pred, operand):
    pred_batched, operand_batched = in_batched
    # Per-env leaves that happen to be unbatched here (constants) get the batch axis; shared
    # ones must stay as they are for the backend (MJX-warp checks their shapes).
    operand = jax.tree.map(
        lambda x, b, s: x if (b or s) else jnp.broadcast_to(x, (axis_size,) + jnp.shape(x)),
        operand, operand_batched, shared_mask)
    out_batched = jax.tree.map(lambda b, s: b or not s, operand_batched, shared_mask)

    def apply_all(op):
      return jax.tree.map(lambda n, x, s: x if s else n, jax.vmap(fn)(op), op, shared_mask)

    def apply_where(pred_and_operand):
      pred_b, op = pred_and_operand
      new = apply_all(op)
      return pred_b, jax.tree.map(
          lambda n, x, s: x if s else jax.vmap(jax.lax.select)(pred_b, n, x),
          new, op, shared_mask)

    if not pred_batched:
      out = maybe_apply(pred, apply_all, operand, lazy=lazy, shared=shared)
    elif lazy:
      out = maybe_apply(jnp.any(pred), apply_where, (pred, operand),
                        shared=None if shared is None else (False, shared_mask))[1]
    else:
      out = apply_where((pred, operand))[1]
    return out, out_batched

  return apply(pred, operand)


def unknown_name_error(
    full_name: str, family: str, valid: Sequence[str], prefix: str
) -> ValueError:
  """One-line ``ValueError`` for a name that is not in ``valid``, with a suggestion."""
  shown = ', '.join(valid)
  close = difflib.get_close_matches(full_name.split('/', 1)[-1], valid, n=1)
  hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ''
  return ValueError(f"unknown env '{full_name}': valid {family} names are {shown}{hint}")
