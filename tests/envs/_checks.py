"""Shared assertions and a jitted rollout for the env tests."""

from __future__ import annotations

from typing import Callable

import chex
import jax
import jax.numpy as jnp

from jaxlab.envs import EnvSpec, EnvState, VecEnv


def assert_valid_state(state: EnvState, spec: EnvSpec, batch: tuple[int, ...] = (),
                       shared=None) -> None:
  """Every field of a (possibly batched) state has the shape and dtype of the interface.

  ``shared``: mask of backend leaves shared by the batch (``_common.shared_leaves``), which
  have no batch axis.
  """
  chex.assert_shape([state.obs, state.final_obs], batch + spec.obs_shape)
  chex.assert_type([state.obs, state.final_obs], jnp.float32)
  scalars = [state.reward, state.terminated, state.truncated, state.episode_return,
             state.episode_length, state.done_return, state.done_length]
  chex.assert_shape(scalars, batch)
  chex.assert_type([state.reward, state.episode_return, state.done_return], jnp.float32)
  chex.assert_type([state.terminated, state.truncated], jnp.bool_)
  chex.assert_type([state.episode_length, state.done_length], jnp.int32)
  chex.assert_tree_all_finite([state.obs, state.final_obs, state.reward, state.done_return])
  # The backend state must be a pytree of arrays batched like the rest, or vmap/scan and
  # sharding of the env state would break.
  leaves = jax.tree.leaves(state.backend)
  shared = [False] * len(leaves) if shared is None else jax.tree.leaves(shared.backend)
  for leaf, is_shared in zip(leaves, shared, strict=True):
    assert isinstance(leaf, jax.Array), type(leaf)
    assert is_shared or leaf.shape[:len(batch)] == batch, leaf.shape


def random_policy(spec: EnvSpec, num_envs: int) -> Callable[[jax.Array, EnvState], jax.Array]:
  def policy(key, state):
    del state
    if spec.discrete:
      return jax.random.randint(key, (num_envs,), 0, spec.action_size, dtype=jnp.int32)
    return jax.random.uniform(key, (num_envs, spec.action_size), minval=-1.0, maxval=1.0)
  return policy


def rollout(env, num_envs: int, num_steps: int, policy=None):
  """Returns a jitted ``run(key) -> (first_state, last_state, trajectory)``.

  ``trajectory`` is the batched state after every step, stacked ``[num_steps, num_envs]``,
  without ``backend`` (to keep memory small).
  """
  venv = VecEnv(env, num_envs)
  policy = policy or random_policy(env.spec, num_envs)

  def run(key):
    reset_key, key = jax.random.split(key)
    first = venv.reset(reset_key)

    def body(state, step_key):
      state = venv.step(state, policy(step_key, state))
      return state, state.replace(backend=None)

    last, traj = jax.lax.scan(body, first, jax.random.split(key, num_steps))
    return first, last, traj

  return jax.jit(run)
