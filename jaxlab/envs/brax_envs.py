"""Brax environments (``brax.envs.get_environment``) as a jaxlab ``Env``.

Brax's ``done`` is a real termination (the ant or hopper left its healthy range), so it maps
to ``terminated``; Brax envs never truncate by themselves, ``TimeLimit`` does (1000 steps by
default, as Brax's own training wrapper).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxlab.envs import _common
from jaxlab.envs.base import EnvSpec, EnvState

PREFIX = 'brax/'
BACKENDS = ('mjx', 'generalized', 'positional', 'spring')
# Default physics pipeline. Measured on 2 shared CPU cores (ant, 64 envs, random actions,
# through this adapter with auto-reset, jax 0.10.2): spring 30k, mjx 15k, generalized 8k
# env-steps/s; compiling reset + a 100-step scan takes ~48 s for mjx, ~19 s for generalized,
# ~10 s for spring. (A plain Brax loop without resets, where most ants have fallen and keep
# being simulated, ran at ~0.5-1k env-steps/s for every pipeline: measure with resets.)
# MJX is the default: the fastest faithful pipeline on CPU, by far the fastest on GPU
# (1.5M env-steps/s for ant on one H200, STACK.md), and MuJoCo's own dynamics, the same
# simulator as Playground and the original dm_control. spring is 2x faster on CPU and
# compiles 5x faster, but its contact model is approximate: use it for smoke tests.
DEFAULT_BACKEND = 'mjx'
DEFAULT_EPISODE_LENGTH = 1000


def valid_names() -> tuple[str, ...]:
  from brax import envs  # Deferred: importing brax takes seconds.

  # `_envs` is Brax's registry; it has no public listing.
  return tuple(sorted(envs._envs))  # pylint: disable=protected-access


class BraxEnv:
  """One Brax environment.

  Observations are ``[obs_dim]`` float32, actions ``[action_size]`` float32 in ``[-1, 1]``
  (clipped, so control costs such as the ant's ``ctrl_cost`` see the applied action).
  ``state.backend`` is Brax's ``State`` (pipeline state, obs, reward, done, metrics, info).
  """

  def __init__(self, name: str, *, backend: str = DEFAULT_BACKEND, **env_kwargs):
    """Builds the env.

    Args:
      name: a Brax env name, e.g. ``"ant"``, ``"hopper"``, ``"humanoid"``.
      backend: physics pipeline, one of ``BACKENDS`` (see ``DEFAULT_BACKEND`` for the choice).
      **env_kwargs: passed to the Brax env, e.g. ``terminate_when_unhealthy=False``.
    """
    from brax import envs

    names = valid_names()
    if name not in names:
      raise _common.unknown_name_error(PREFIX + name, 'Brax', names, PREFIX)
    if backend not in BACKENDS:
      raise ValueError(f"brax env '{name}': backend must be one of {BACKENDS}, got {backend!r}")
    self.brax_env = envs.get_environment(name, backend=backend, **env_kwargs)
    self.backend_name = backend
    obs = jax.eval_shape(self.brax_env.reset, jax.random.PRNGKey(0)).obs
    if not hasattr(obs, 'shape'):
      raise ValueError(f"brax env '{name}' gives dict observations with these arguments; "
                       'only array observations are supported')
    self.spec = EnvSpec(
        name=PREFIX + name,
        obs_shape=tuple(obs.shape),
        discrete=False,
        action_size=int(self.brax_env.action_size),
        episode_length=DEFAULT_EPISODE_LENGTH,
    )

  @property
  def unwrapped(self) -> 'BraxEnv':
    return self

  def reset(self, key: jax.Array) -> EnvState:
    """Starts an episode. ``key``: PRNG key. Returns an unbatched ``EnvState``."""
    key, reset_key = jax.random.split(key)
    backend = self.brax_env.reset(reset_key)
    return _common.first_state(backend, backend.obs, key)

  def step(self, state: EnvState, action: jax.Array) -> EnvState:
    """Advances one control step. ``action``: ``[action_size]`` float32."""
    action = jnp.clip(jnp.asarray(action, jnp.float32), -1.0, 1.0)
    prev = state.backend
    # Brax's step updates `metrics` in place (`state.metrics.update(...)`); give it fresh
    # dicts so the caller's state is not modified.
    prev = prev.replace(metrics=dict(prev.metrics), info=dict(prev.info))
    backend = self.brax_env.step(prev, action)
    return _common.next_state(
        state, backend=backend, obs=backend.obs, reward=backend.reward,
        terminated=backend.done > 0.5, key=state.key)

  def __repr__(self) -> str:
    return f'BraxEnv({self.spec.name!r}, backend={self.backend_name!r})'
