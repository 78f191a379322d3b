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

``DeadEndLure``: the same dynamics with room for LEAST's effect (docs/reproductions/least.md,
"Redesigned study"): the line is [-1, 2], the goal ``x >= 1.2`` is 12 steps away at full speed
(best return about 88.5 of 100 steps), the dead end ``x < -0.3`` is 3 steps away, and a *lure*:
the step that enters the dead end pays +1 (then -0.1 per step for the rest of the episode, so
an episode that takes the lure at step 3 returns about -8.6). The lure is the first and the
most frequent positive reward a random or early policy sees, and an early critic, which has
learned the immediate reward before the dead end's long tail of -0.1, pulls the policy into
the trap. A uniform random policy enters the dead end on 59% of the episodes, spends 38% of its
steps there, and reaches the goal on 3% of the episodes.

Both tasks are one parameterised ``ToyEnv``; ``ToyEnv(name, **params)`` (or
``envs.make("toy/<Name>", **params)``) overrides any field of ``CorridorParams``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxlab.envs import _common
from jaxlab.envs.base import EnvSpec, EnvState

PREFIX = 'toy/'

STEP_SIZE = 0.1
GOAL = 0.8
DEAD_END = -0.5
DEAD_END_REWARD = -0.1


@dataclasses.dataclass(frozen=True)
class CorridorParams:
  """One corridor: a point ``x`` in [x_min, x_max] moved by ``step_size * a`` per step.

  Rewards per step: +1 in the goal region x >= goal; ``dead_end_reward`` once stuck (x <
  dead_end, for good), except ``entry_reward`` on the step that enters the dead end; else 0.
  """
  goal: float = GOAL
  dead_end: float = DEAD_END
  dead_end_reward: float = DEAD_END_REWARD
  entry_reward: float | None = None  # None: the entering step pays dead_end_reward too
  x_min: float = -1.0
  x_max: float = 1.0
  step_size: float = STEP_SIZE
  episode_length: int = 100


_ENVS = {
    'DeadEndCorridor': CorridorParams(),
    'DeadEndLure': CorridorParams(goal=1.2, dead_end=-0.3, entry_reward=1.0, x_max=2.0),
}


def valid_names() -> tuple[str, ...]:
  return tuple(_ENVS)


class ToyEnv:
  """One toy task; ``state.backend`` is ``{"x": () float32, "stuck": () bool}``."""

  def __init__(self, name: str, **params):
    if name not in _ENVS:
      raise _common.unknown_name_error(PREFIX + name, 'toy', tuple(_ENVS), PREFIX)
    try:
      self.params = dataclasses.replace(_ENVS[name], **params)
    except TypeError as err:
      raise ValueError(f'toy/{name}: {err}; the parameters are '
                       f'{", ".join(f.name for f in dataclasses.fields(CorridorParams))}'
                       ) from None
    p = self.params
    if not p.x_min < p.dead_end < p.goal <= p.x_max:
      raise ValueError(f'toy/{name}: need x_min < dead_end < goal <= x_max, got {p}')
    self.spec = EnvSpec(name=PREFIX + name, obs_shape=(1,), discrete=False, action_size=1,
                        episode_length=p.episode_length)

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
    p = self.params
    x, was_stuck = state.backend['x'], state.backend['stuck']
    x = jnp.where(was_stuck, x, jnp.clip(x + p.step_size * a, p.x_min, p.x_max))
    stuck = was_stuck | (x < p.dead_end)
    reward = jnp.where(stuck, p.dead_end_reward, jnp.where(x >= p.goal, 1.0, 0.0))
    if p.entry_reward is not None:
      reward = jnp.where(stuck & ~was_stuck, p.entry_reward, reward)
    reward = reward.astype(jnp.float32)
    return _common.next_state(state, backend={'x': x, 'stuck': stuck}, obs=x[None],
                              reward=reward, terminated=jnp.zeros((), jnp.bool_),
                              key=state.key)

  def __repr__(self) -> str:
    return f'ToyEnv({self.spec.name!r})'
