"""Wrappers over the single-env interface of ``jaxlab.envs.base``.

The stack ``jaxlab.envs.make`` builds, innermost first:

    adapter -> ActionRepeat (if repeat > 1) -> TimeLimit -> AutoReset

``VecEnv`` and ``NormalizeObservation`` work on batches and go on top when wanted.

Episode statistics (``episode_return``, ``episode_length``, ``done_return``,
``done_length``) are kept by every layer that defines an agent step (adapters,
``ActionRepeat``) or ends an episode (``TimeLimit``), so they are right in any stacking order
and need no separate wrapper. ``TimeLimit`` reads ``episode_length`` to truncate.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp

from jaxlab.core import running_stats
from jaxlab.envs import _common
from jaxlab.envs.base import Env, EnvSpec, EnvState


class Wrapper:
  """Base of the single-env wrappers: forwards ``reset``/``step`` and ``spec``."""

  def __init__(self, env: Env):
    self.env = env
    self.spec: EnvSpec = env.spec

  @property
  def unwrapped(self) -> Env:
    """The backend adapter at the bottom of the stack."""
    return getattr(self.env, 'unwrapped', self.env)

  def reset(self, key: jax.Array) -> EnvState:
    return self.env.reset(key)

  def step(self, state: EnvState, action: jax.Array) -> EnvState:
    return self.env.step(state, action)

  def __repr__(self) -> str:
    return f'{type(self).__name__}({self.env!r})'


class TimeLimit(Wrapper):
  """Truncates the episode once it has lasted ``episode_length`` agent steps.

  ``truncated`` is set on the step whose ``episode_length`` reaches the limit, unless that
  same step terminated: a terminal transition must not be bootstrapped, whatever the clock
  says. Truncations from inner layers are kept.
  """

  def __init__(self, env: Env, episode_length: int):
    if not isinstance(episode_length, int) or episode_length < 1:
      raise ValueError(f'TimeLimit: episode_length must be a positive int, got {episode_length!r}')
    super().__init__(env)
    self.episode_length = episode_length
    self.spec = dataclasses.replace(env.spec, episode_length=episode_length)

  def step(self, state: EnvState, action: jax.Array) -> EnvState:
    new = self.env.step(state, action)
    out_of_time = new.episode_length >= self.episode_length
    truncated = jnp.logical_or(new.truncated,
                               jnp.logical_and(out_of_time, jnp.logical_not(new.terminated)))
    return _common.with_episode_stats(state, new.replace(truncated=truncated), new.reward)

  def __repr__(self) -> str:
    return f'TimeLimit({self.env!r}, {self.episode_length})'


class AutoReset(Wrapper):
  """Starts a new episode inside ``step`` when the step ended one.

  After such a step: ``obs`` (and ``backend``, ``extras``) belong to the new episode, drawn
  with a key split from ``state.key``; ``final_obs`` is the observation the step reached;
  ``reward``, ``terminated``, ``truncated``, ``done_return`` and ``done_length`` describe the
  finished step/episode; ``episode_return`` and ``episode_length`` restart at 0.

  With ``lazy=True`` (default) the reset is computed only when some env in the batch needs
  it (``_common.maybe_apply``); ``lazy=False`` computes it at every step and selects, which
  gives the same results (the test suite checks this) at the cost of one reset per step.
  Leaves that a backend shares across the batch (MJX-warp's contact buffers, see
  ``_common.shared_leaves``) keep their stepped value.
  """

  def __init__(self, env: Env, lazy: bool = True):
    super().__init__(env)
    self.lazy = lazy

  @functools.cached_property
  def _shared(self):
    return _common.shared_leaves(self.env)

  def step(self, state: EnvState, action: jax.Array) -> EnvState:
    new = self.env.step(state, action)
    key, reset_key = jax.random.split(new.key)
    new = new.replace(key=key)

    def start_new_episode(operand):
      reset_key, reached = operand
      fresh = self.env.reset(reset_key)
      started = reached.replace(
          backend=fresh.backend,
          obs=fresh.obs,
          episode_return=fresh.episode_return,
          episode_length=fresh.episode_length,
          extras=fresh.extras,
      )
      return reset_key, started

    shared = None if self._shared is None else (False, self._shared)
    return _common.maybe_apply(new.done, start_new_episode, (reset_key, new), lazy=self.lazy,
                               shared=shared)[1]


class ActionRepeat(Wrapper):
  """Applies each action ``repeat`` times and returns the summed reward.

  Stops at the first inner step that ends the episode: later inner steps are computed (a
  batch cannot skip work per element) but discarded, so neither their reward nor their
  state leaks into the result. ``spec.episode_length`` becomes
  ``ceil(inner episode_length / repeat)`` agent steps.
  """

  def __init__(self, env: Env, repeat: int):
    if not isinstance(repeat, int) or repeat < 1:
      raise ValueError(f'ActionRepeat: repeat must be a positive int, got {repeat!r}')
    super().__init__(env)
    self.repeat = repeat
    self.spec = dataclasses.replace(
        env.spec, episode_length=math.ceil(env.spec.episode_length / repeat))

  @functools.cached_property
  def _shared(self):
    return _common.shared_leaves(self.env)

  def step(self, state: EnvState, action: jax.Array) -> EnvState:
    if self.repeat == 1:
      return self.env.step(state, action)

    shared = self._shared

    def one_step(carry, _):
      inner, total, done = carry
      new = self.env.step(inner, action)
      inner = _common.tree_select(done, inner, new, shared)
      total = total + jnp.where(done, 0.0, new.reward)
      return (inner, total, jnp.logical_or(done, new.done)), None

    start = (state, jnp.zeros((), jnp.float32), jnp.zeros((), jnp.bool_))
    (inner, total, _), _ = jax.lax.scan(one_step, start, None, length=self.repeat)
    # The inner layers counted `repeat` steps; at this level it was one step of `total`.
    return _common.with_episode_stats(state, inner.replace(reward=total), total)

  def __repr__(self) -> str:
    return f'ActionRepeat({self.env!r}, {self.repeat})'


class VecEnv:
  """``num_envs`` copies of a single env, stepped together with ``vmap``.

  ``spec`` is the single env's spec (``obs_shape`` without the batch axis). States are
  batched ``EnvState``s whose leaves have a leading ``[num_envs]`` axis, except the few that
  MJX-warp shares across the batch (``_common.shared_leaves``; None for other backends).
  """

  def __init__(self, env: Env, num_envs: int):
    if not isinstance(num_envs, int) or num_envs < 1:
      raise ValueError(f'VecEnv: num_envs must be a positive int, got {num_envs!r}')
    self.env = env
    self.num_envs = num_envs
    self.spec = env.spec

  @property
  def unwrapped(self) -> Env:
    return getattr(self.env, 'unwrapped', self.env)

  def reset(self, key: jax.Array) -> EnvState:
    """``key``: one PRNG key. Returns a state batched over ``[num_envs]``."""
    return jax.vmap(self.env.reset)(jax.random.split(key, self.num_envs))

  def step(self, state: EnvState, action: jax.Array) -> EnvState:
    """``action``: ``[num_envs]`` int32 or ``[num_envs, action_size]`` float32."""
    return jax.vmap(self.env.step)(state, action)

  def __repr__(self) -> str:
    return f'VecEnv({self.env!r}, {self.num_envs})'


class NormalizeObservation(Wrapper):
  """Standardises ``obs`` and ``final_obs`` with running statistics of the observations.

  The statistics (``running_stats.RunningStats``) live in ``state.extras[STATS_KEY]``, one
  identical copy per env (leading batch axes like every other leaf), so a batched state stays
  a uniform pytree that can be scanned, sharded and indexed per env. Each ``reset``/``step``
  first merges the raw observations of the whole batch into the statistics (unless
  ``frozen``), then normalises with the updated statistics. Works on a ``VecEnv`` (batch
  axes inferred from ``spec.obs_shape``) or on a single env.

  For evaluation with the statistics of training, pass them as ``initial_stats`` with
  ``frozen=True`` (read them with ``NormalizeObservation.stats(state)``).
  """

  STATS_KEY = 'obs_norm'

  def __init__(
      self,
      env,
      *,
      clip: float | None = 5.0,
      frozen: bool = False,
      initial_stats: running_stats.RunningStats | None = None,
  ):
    super().__init__(env)
    self.num_envs = getattr(env, 'num_envs', None)
    self.clip = clip
    self.frozen = frozen
    self.initial_stats = (running_stats.init(env.spec.obs_shape) if initial_stats is None
                          else initial_stats)

  @classmethod
  def stats(cls, state: EnvState) -> running_stats.RunningStats:
    """The (unbatched) statistics held by a possibly batched ``state``."""
    stats = state.extras[cls.STATS_KEY]
    batch_ndim = stats.count.ndim
    return jax.tree.map(lambda x: x[(0,) * batch_ndim], stats)

  def _apply(self, stats: running_stats.RunningStats, state: EnvState) -> EnvState:
    batch_shape = state.obs.shape[:state.obs.ndim - len(self.spec.obs_shape)]
    if not self.frozen:
      stats = running_stats.update(stats, state.obs)
    extras = dict(state.extras)
    extras[self.STATS_KEY] = jax.tree.map(
        lambda x: jnp.broadcast_to(x, batch_shape + x.shape), stats)
    return state.replace(
        obs=running_stats.normalize(stats, state.obs, self.clip),
        final_obs=running_stats.normalize(stats, state.final_obs, self.clip),
        extras=extras,
    )

  def reset(self, key: jax.Array) -> EnvState:
    return self._apply(self.initial_stats, self.env.reset(key))

  def step(self, state: EnvState, action: jax.Array) -> EnvState:
    stats = self.stats(state)
    # The inner stack must see the extras it created itself: AutoReset selects between the
    # stepped extras and a fresh reset's, which have no statistics.
    extras = dict(state.extras)
    del extras[self.STATS_KEY]
    new = self.env.step(state.replace(extras=extras), action)
    return self._apply(stats, new)
