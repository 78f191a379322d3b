"""Small pure-JAX tasks written for jaxlab's own checks (``"toy/<Name>"``).

``DeadEndCorridor``: a point on a line with a trap, the smallest task with the "sunk cost"
structure LEAST targets (spec rl.md §3.1 and §3.6, whose PointMaze has a long dead-end branch):

* position ``x`` in [-1, 1], starting near 0 (uniform in [-0.05, 0.05]); one continuous action
  in [-1, 1] moves it by ``0.1 * a``;
* the goal region ``x >= 0.8`` pays +1 per step; elsewhere the reward is 0;
* the dead end ``x < -0.5``: once entered, the point is stuck there (actions do nothing) and
  every remaining step pays -0.1. Nothing terminates: an episode that fell in runs to its time
  limit (100 steps) without any chance of reward, which is what LEAST's stop is meant to cut;
* observation ``[x]``; the best return is about 92 (8 steps to the goal, then stay).

The -0.1 makes dead-end transitions identifiable by reward (``config.least.low_reward``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxlab.envs import _common
from jaxlab.envs.base import EnvSpec, EnvState

PREFIX = 'toy/'
_ENVS = ('DeadEndCorridor',)

STEP_SIZE = 0.1
GOAL = 0.8
DEAD_END = -0.5
DEAD_END_REWARD = -0.1


def valid_names() -> tuple[str, ...]:
  return _ENVS


class ToyEnv:
  """One toy task; ``state.backend`` is ``{"x": () float32, "stuck": () bool}``."""

  def __init__(self, name: str):
    if name not in _ENVS:
      raise _common.unknown_name_error(PREFIX + name, 'toy', _ENVS, PREFIX)
    self.spec = EnvSpec(name=PREFIX + name, obs_shape=(1,), discrete=False, action_size=1,
                        episode_length=100)

  @property
  def unwrapped(self) -> 'ToyEnv':
    return self

  def reset(self, key: jax.Array) -> EnvState:
    """Starts an episode near x = 0. ``key``: PRNG key. Returns an unbatched ``EnvState``."""
    key, start_key = jax.random.split(key)
    x = jax.random.uniform(start_key, (), jnp.float32, -0.05, 0.05)
    backend = {'x': x, 'stuck': jnp.zeros((), jnp.bool_)}
    return _common.first_state(backend, x[None], key)

  def step(self, state: EnvState, action: jax.Array) -> EnvState:
    """One step. ``action``: [1] float32 in [-1, 1] (clipped)."""
    a = jnp.clip(jnp.asarray(action, jnp.float32).reshape(()), -1.0, 1.0)
    x, stuck = state.backend['x'], state.backend['stuck']
    x = jnp.where(stuck, x, jnp.clip(x + STEP_SIZE * a, -1.0, 1.0))
    stuck = stuck | (x < DEAD_END)
    reward = jnp.where(stuck, DEAD_END_REWARD, jnp.where(x >= GOAL, 1.0, 0.0))
    return _common.next_state(state, backend={'x': x, 'stuck': stuck}, obs=x[None],
                              reward=reward, terminated=jnp.zeros((), jnp.bool_),
                              key=state.key)

  def __repr__(self) -> str:
    return f'ToyEnv({self.spec.name!r})'
