"""Environments as pure ``(reset, step)`` functions: one interface over three backends.

    env = jaxlab.envs.make("playground/CartpoleBalance")   # or "brax/ant", "gymnax/CartPole-v1"
    state = env.reset(key)
    state = env.step(state, action)

See ``jaxlab.envs.base`` for the interface and ``jaxlab.envs.wrappers`` for the wrappers.
Backends are imported lazily, so importing this package is cheap.
"""

from __future__ import annotations

from typing import Any

from jaxlab.envs.base import Env, EnvSpec, EnvState
from jaxlab.envs.wrappers import (
    ActionRepeat,
    AutoReset,
    NormalizeObservation,
    TimeLimit,
    VecEnv,
    Wrapper,
)

# prefix -> (module under jaxlab.envs, adapter class, family name for messages, examples).
_BACKENDS = {
    'playground': ('playground', 'PlaygroundEnv', 'Playground DM Control',
                   ('CartpoleBalance', 'CheetahRun')),
    'brax': ('brax_envs', 'BraxEnv', 'Brax', ('ant', 'hopper')),
    'gymnax': ('gymnax_envs', 'GymnaxEnv', 'gymnax', ('CartPole-v1', 'Breakout-MinAtar')),
    'toy': ('toy', 'ToyEnv', 'toy', ('DeadEndCorridor',)),
}


def _backend_module(prefix: str):
  import importlib

  return importlib.import_module(f'jaxlab.envs.{_BACKENDS[prefix][0]}')


def valid_names(prefix: str) -> tuple[str, ...]:
  """Env names (without the prefix) of one backend: ``"playground"``, ``"brax"``, ``"gymnax"``."""
  if prefix not in _BACKENDS:
    raise ValueError(f'unknown env backend {prefix!r}: valid backends are {", ".join(_BACKENDS)}')
  return _backend_module(prefix).valid_names()


def make(
    name: str,
    *,
    episode_length: int | None = None,
    action_repeat: int = 1,
    auto_reset: bool = True,
    **backend_kwargs: Any,
) -> Env:
  """Builds a single (unbatched) env with the standard wrappers.

  Stack: adapter -> ``ActionRepeat`` (if ``action_repeat > 1``) -> ``TimeLimit`` ->
  ``AutoReset`` (if ``auto_reset``). Batch with ``VecEnv(env, n)`` or ``jax.vmap``.

  Args:
    name: ``"<backend>/<env>"``, e.g. ``"playground/CartpoleBalance"``, ``"brax/ant"``,
      ``"gymnax/CartPole-v1"``, ``"gymnax/Breakout-MinAtar"``.
    episode_length: agent steps (after action repeat) before ``truncated``. Default: the
      backend's limit (Playground config: 1000; Brax: 1000; gymnax: ``max_steps_in_episode``,
      e.g. 500 for CartPole-v1) divided by ``action_repeat``, rounded up.
    action_repeat: env steps per agent step; rewards are summed.
    auto_reset: start a new episode inside ``step`` when one ends.
    **backend_kwargs: passed to the adapter: ``impl``/``config_overrides`` (Playground),
      ``backend`` and env arguments (Brax), ``env_kwargs`` and ``EnvParams`` fields (gymnax).

  Returns:
    An ``Env`` whose ``spec.name`` is ``name``.

  Raises:
    ValueError: unknown name (one line listing the valid names), bad lengths.
  """
  prefix, sep, env_name = name.partition('/')
  if not sep or prefix not in _BACKENDS:
    examples = ', '.join(f"'{p}/{ex[0]}'" for p, (_, _, _, ex) in _BACKENDS.items())
    raise ValueError(
        f"unknown env '{name}': names look like '<backend>/<env>' with backend one of "
        f"{', '.join(p + '/' for p in _BACKENDS)} (e.g. {examples})")
  if not isinstance(action_repeat, int) or action_repeat < 1:
    raise ValueError(f'make({name!r}): action_repeat must be a positive int, got {action_repeat!r}')
  if episode_length is not None and (not isinstance(episode_length, int) or episode_length < 1):
    raise ValueError(
        f'make({name!r}): episode_length must be a positive int, got {episode_length!r}')
  module = _backend_module(prefix)
  _, class_name, _, _ = _BACKENDS[prefix]
  env = getattr(module, class_name)(env_name, **backend_kwargs)
  if action_repeat > 1:
    env = ActionRepeat(env, action_repeat)
  env = TimeLimit(env, env.spec.episode_length if episode_length is None else episode_length)
  if auto_reset:
    env = AutoReset(env)
  return env


__all__ = [
    'ActionRepeat',
    'AutoReset',
    'Env',
    'EnvSpec',
    'EnvState',
    'NormalizeObservation',
    'TimeLimit',
    'VecEnv',
    'Wrapper',
    'make',
    'valid_names',
]
