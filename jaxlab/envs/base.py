"""The one environment interface of jaxlab.

Every environment, whatever its backend (MuJoCo Playground, Brax, gymnax), is a pair of pure
functions over a single (unbatched) environment:

    state = env.reset(key)          # key: PRNG key
    state = env.step(state, action) # action: [action_size] float32 or () int32

Batching is `jax.vmap(env.reset)(keys)` / `jax.vmap(env.step)(states, actions)`; a trainer
never needs anything else. `EnvState` separates the two ways an episode can end, because the
value target differs:

* ``terminated``: the MDP reached a terminal state; the return after it is zero.
* ``truncated``: the episode was cut (time limit, early stop such as LEAST); the value of
  ``final_obs`` must be bootstrapped.

With auto-reset (the default wrapper stack of ``jaxlab.envs.make``), after a step that ended an
episode ``obs`` is already the first observation of the next episode, while ``final_obs`` holds
the observation the step actually reached. When the episode did not end, ``final_obs == obs``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

import jax
import jax.numpy as jnp
from flax import struct


@dataclasses.dataclass(frozen=True)
class EnvSpec:
  """Static description of an environment.

  Attributes:
    name: registry name, e.g. ``"playground/CartpoleBalance"``.
    obs_shape: shape of one observation (no batch axis).
    discrete: True for a categorical action space.
    action_size: number of actions (discrete) or action dimensions (continuous).
    action_low / action_high: bounds of continuous actions (both -1/1 for our backends).
    episode_length: steps before ``truncated`` is set (after action repeat).
  """

  name: str
  obs_shape: tuple[int, ...]
  discrete: bool
  action_size: int
  episode_length: int
  action_low: float = -1.0
  action_high: float = 1.0


@struct.dataclass
class EnvState:
  """State of one environment after reset or step. All fields are arrays (a pytree).

  Attributes:
    backend: the backend's own state (Playground/Brax ``State``, gymnax state, ...).
    obs: current observation, ``spec.obs_shape``, float32.
    reward: reward of the last step, () float32 (0 after reset).
    terminated: () bool, the last step reached a terminal state.
    truncated: () bool, the last step cut the episode (time limit or early stop).
    final_obs: observation reached by the last step, before any auto-reset.
    episode_return: () float32 running undiscounted return of the current episode.
    episode_length: () int32 steps taken in the current episode.
    done_return: () float32, return of the episode that ended at this step (0 otherwise).
    done_length: () int32, length of the episode that ended at this step (0 otherwise).
    key: PRNG key owned by this env (stochastic dynamics, resets).
    extras: dict of extra per-env arrays that wrappers may add (e.g. LEAST histories).
  """

  backend: Any
  obs: jax.Array
  reward: jax.Array
  terminated: jax.Array
  truncated: jax.Array
  final_obs: jax.Array
  episode_return: jax.Array
  episode_length: jax.Array
  done_return: jax.Array
  done_length: jax.Array
  key: jax.Array
  extras: dict = struct.field(default_factory=dict)

  @property
  def done(self) -> jax.Array:
    return jnp.logical_or(self.terminated, self.truncated)


class Env(Protocol):
  """What every backend adapter and wrapper provides."""

  spec: EnvSpec

  def reset(self, key: jax.Array) -> EnvState:
    ...

  def step(self, state: EnvState, action: jax.Array) -> EnvState:
    ...
