"""MuJoCo Playground DM Control suite environments as a jaxlab ``Env``.

Playground (``pip install playground==0.2.0``, imported as ``mujoco_playground``) reimplements
the DM Control suite in MJX. Its envs never truncate: the 1000-step limit of the suite lives
in the env config (``episode_length``) and is applied by jaxlab's ``TimeLimit`` (``make`` does
this). Playground's ``done`` is raised only when the simulation diverged (NaN in ``qpos`` or
``qvel``); it is mapped to ``terminated``, honestly, and the NaNs are scrubbed from the
observation and reward so that a value network never sees them (see ``step``).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxlab.envs import _common
from jaxlab.envs.base import EnvSpec, EnvState

PREFIX = 'playground/'


def valid_names() -> tuple[str, ...]:
  """Names of Playground's DM Control suite envs (locomotion and manipulation envs need the
  MuJoCo Menagerie, which Playground downloads with git, so they are not offered)."""
  from mujoco_playground import dm_control_suite  # Deferred: importing it takes seconds.

  return tuple(dm_control_suite.ALL_ENVS)


class PlaygroundEnv:
  """One Playground DM Control suite env.

  Observations are the flat ``[obs_dim]`` float32 vector of Playground; actions are
  ``[action_size]`` float32 in ``[-1, 1]`` (clipped: the simulator clamps ``ctrl`` to the
  same range, and clipping first keeps the reward terms that read the action, such as
  cartpole's ``small_control``, consistent with what was applied).

  ``state.backend`` is Playground's ``State`` (a pytree: MJX ``Data``, ``obs``, ``reward``,
  ``done``, ``metrics`` with the reward components, ``info``).
  """

  def __init__(
      self,
      name: str,
      *,
      impl: str = 'jax',
      config_overrides: dict[str, Any] | None = None,
  ):
    """Builds the env.

    Args:
      name: a Playground DM Control suite name, e.g. ``"CartpoleBalance"``, ``"CheetahRun"``.
      impl: MJX implementation, ``"jax"`` (default: about 6x faster than ``"warp"`` on CPU,
        measured on 2 cores) or ``"warp"`` (Playground's own default, for NVIDIA GPUs).
      config_overrides: extra Playground config entries, e.g. ``{"ctrl_dt": 0.02}``.
    """
    from mujoco_playground import registry  # Deferred: importing it takes seconds.

    names = valid_names()
    if name not in names:
      raise _common.unknown_name_error(PREFIX + name, 'Playground DM Control', names, PREFIX)
    if impl not in ('jax', 'warp'):
      raise ValueError(f"playground env '{name}': impl must be 'jax' or 'warp', got {impl!r}")
    overrides = dict(config_overrides or {})
    if overrides.get('vision', False):
      raise ValueError(
          f"playground env '{name}': vision=True gives dict (pixel) observations, which this "
          'adapter does not support')
    overrides['impl'] = impl
    config = registry.get_default_config(name)
    try:
      self.playground_env = registry.load(name, config=config, config_overrides=overrides)
    except AttributeError as e:
      # ReacherEasy/Hard in playground 0.2.0 call MjSpec.find_body, gone from mujoco 3.17.
      raise RuntimeError(
          f"playground failed to build '{name}' with the installed mujoco "
          f'({type(e).__name__}: {e})') from e
    # `load` applies the overrides to `config` in place, so this is the limit actually used.
    self._episode_length = int(config.episode_length)

    obs = jax.eval_shape(self.playground_env.reset, jax.random.PRNGKey(0)).obs
    if not hasattr(obs, 'shape'):
      raise ValueError(f"playground env '{name}' has dict observations; not supported")
    self.spec = EnvSpec(
        name=PREFIX + name,
        obs_shape=tuple(obs.shape),
        discrete=False,
        action_size=int(self.playground_env.action_size),
        episode_length=self._episode_length,
    )

  @property
  def unwrapped(self) -> 'PlaygroundEnv':
    return self

  def reset(self, key: jax.Array) -> EnvState:
    """Starts an episode. ``key``: PRNG key. Returns an unbatched ``EnvState``."""
    key, reset_key = jax.random.split(key)
    backend = self.playground_env.reset(reset_key)
    return _common.first_state(backend, backend.obs, key)

  def step(self, state: EnvState, action: jax.Array) -> EnvState:
    """Advances one control step (``ctrl_dt``). ``action``: ``[action_size]`` float32."""
    action = jnp.clip(jnp.asarray(action, jnp.float32), -1.0, 1.0)
    prev = state.backend
    # Playground's step writes reward components into `metrics` (and some envs into `info`)
    # in place; fresh dicts keep the caller's state unchanged, as a pure function must.
    prev = prev.replace(metrics=dict(prev.metrics), info=dict(prev.info))
    backend = self.playground_env.step(prev, action)
    terminated = backend.done > 0.5
    # A diverged simulation ends the episode with NaN obs/reward. Zeros in their place keep
    # the NaNs out of the return, the observation statistics and V(final_obs) (a trainer
    # multiplies that by 1 - terminated, and NaN * 0 is still NaN).
    obs = jnp.where(terminated, jnp.nan_to_num(backend.obs, nan=0.0, posinf=0.0, neginf=0.0),
                    backend.obs)
    reward = jnp.where(jnp.isfinite(backend.reward), backend.reward, 0.0)
    return _common.next_state(
        state, backend=backend, obs=obs, reward=reward, terminated=terminated, key=state.key)

  def __repr__(self) -> str:
    return f'PlaygroundEnv({self.spec.name!r})'
