"""gymnax environments (classic control, MinAtar, bsuite, misc) as a jaxlab ``Env``.

The adapter calls gymnax's ``reset_env``/``step_env``, not ``reset``/``step``: the latter
auto-reset inside the env and would hide the reached observation. In gymnax 1.0.1
``step_env`` returns the *natural* termination only (pole fell, MinAtar game over); the time
limit is a separate ``is_truncated(state.time >= max_steps_in_episode)`` that only ``step``
applies. So ``terminated`` comes straight from ``step_env`` and the time limit
(``params.max_steps_in_episode``, e.g. 500 for CartPole-v1, 1000 for Breakout-MinAtar) is
enforced by jaxlab's ``TimeLimit`` as ``truncated``. No gymnax dynamics read
``max_steps_in_episode``, so nothing else depends on it.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

import jax
import jax.numpy as jnp

from jaxlab.envs import _common
from jaxlab.envs.base import EnvSpec, EnvState

PREFIX = 'gymnax/'


# Imported at module level by gymnax's environments but used only by their render methods
# (seaborn by Pong's, pyplot by several): ~1.7 s of every process that makes a gymnax env
# (seaborn pulls in pandas and scipy.stats), measured on the 2-core CPU.
_RENDER_ONLY = ('seaborn', 'matplotlib.pyplot')


class _Deferred(types.ModuleType):
  """Stands in for a module while gymnax imports: the first attribute anyone reads from it
  imports the real module and returns the real attribute."""

  def __getattr__(self, attr):
    if sys.modules.get(self.__name__) is self:
      del sys.modules[self.__name__]
    return getattr(importlib.import_module(self.__name__), attr)


def import_gymnax():
  """The ``gymnax`` package, imported without loading its render-only dependencies (they load
  when a render method first uses them). Deferred with the other backends, so that importing
  jaxlab's env registry costs nothing."""
  if 'gymnax' in sys.modules:
    return sys.modules['gymnax']
  standins = [name for name in _RENDER_ONLY if name not in sys.modules]
  for name in standins:
    sys.modules[name] = _Deferred(name)
  try:
    import gymnax  # pylint: disable=import-outside-toplevel
  finally:
    # Only gymnax's modules keep a stand-in; everyone else imports the real module as usual.
    for name in standins:
      if isinstance(sys.modules.get(name), _Deferred):
        del sys.modules[name]
  return gymnax


def valid_names() -> tuple[str, ...]:
  return tuple(import_gymnax().registered_envs)


class GymnaxEnv:
  """One gymnax environment.

  Observations keep gymnax's shape (``[4]`` for CartPole, ``[10, 10, C]`` for MinAtar) and
  are cast to float32 (MinAtar's are bool in some games). Discrete actions are () int32
  indices; continuous actions (Pendulum, MountainCarContinuous) are ``[action_size]`` float32
  in ``[-1, 1]``, clipped and mapped affinely onto the env's ``[low, high]`` box.
  ``state.backend`` is gymnax's own env state; the env's randomness comes from splitting
  ``state.key`` at every step.
  """

  def __init__(self, name: str, *, env_kwargs: dict[str, Any] | None = None,
               **param_overrides):
    """Builds the env.

    Args:
      name: a gymnax id, e.g. ``"CartPole-v1"``, ``"Breakout-MinAtar"``.
      env_kwargs: passed to the gymnax env class (e.g. ``use_minimal_action_set``).
      **param_overrides: fields of the env's ``EnvParams`` to change, e.g. ``gravity=9.0``.
    """
    gymnax = import_gymnax()
    from gymnax.environments import spaces  # pylint: disable=import-outside-toplevel

    names = valid_names()
    if name not in names:
      raise _common.unknown_name_error(PREFIX + name, 'gymnax', names, PREFIX)
    self.gymnax_env, params = gymnax.make(name, **(env_kwargs or {}))
    if param_overrides:
      params = params.replace(**param_overrides)
    self.params = params

    space = self.gymnax_env.action_space(params)
    if isinstance(space, spaces.Discrete):
      discrete, action_size = True, int(space.n)
      self._low = self._high = None
    elif isinstance(space, spaces.Box) and len(space.shape) == 1:
      discrete, action_size = False, int(space.shape[0])
      self._low = jnp.broadcast_to(jnp.asarray(space.low, jnp.float32), space.shape)
      self._high = jnp.broadcast_to(jnp.asarray(space.high, jnp.float32), space.shape)
    else:
      raise ValueError(f"gymnax env '{name}' has action space {space!r}; only Discrete and "
                       '1-D Box are supported')
    obs = jax.eval_shape(lambda k: self.gymnax_env.reset_env(k, params)[0],
                         jax.random.PRNGKey(0))
    if not hasattr(obs, 'shape'):
      raise ValueError(f"gymnax env '{name}' has structured observations; not supported")
    self.spec = EnvSpec(
        name=PREFIX + name,
        obs_shape=tuple(obs.shape),
        discrete=discrete,
        action_size=action_size,
        episode_length=int(params.max_steps_in_episode),
    )

  @property
  def unwrapped(self) -> 'GymnaxEnv':
    return self

  def reset(self, key: jax.Array) -> EnvState:
    """Starts an episode. ``key``: PRNG key. Returns an unbatched ``EnvState``."""
    key, reset_key = jax.random.split(key)
    obs, backend = self.gymnax_env.reset_env(reset_key, self.params)
    return _common.first_state(backend, obs, key)

  def step(self, state: EnvState, action: jax.Array) -> EnvState:
    """One env step. ``action``: () int32 (discrete) or ``[action_size]`` float32."""
    if self.spec.discrete:
      action = jnp.asarray(action, jnp.int32).reshape(())
    else:
      unit = jnp.clip(jnp.asarray(action, jnp.float32), -1.0, 1.0)
      action = self._low + (unit + 1.0) * 0.5 * (self._high - self._low)
    key, step_key = jax.random.split(state.key)
    obs, backend, reward, terminated, _ = self.gymnax_env.step_env(
        step_key, state.backend, action, self.params)
    return _common.next_state(
        state, backend=backend, obs=obs, reward=reward, terminated=terminated, key=key)

  def __repr__(self) -> str:
    return f'GymnaxEnv({self.spec.name!r})'
