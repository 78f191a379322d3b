"""Playground adapter: interface, time limit from the env config, NaN -> terminated.

One compiled program (reset, 6 steps, a diverged step) keeps this file fast.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlab.envs as envs

from ._checks import assert_valid_state


def test_cartpole_balance_interface_and_divergence():
  env = envs.make('playground/CartpoleBalance', episode_length=5)
  spec = env.spec
  assert (spec.obs_shape, spec.discrete, spec.action_size) == ((5,), False, 1)
  venv = envs.VecEnv(env, 2)

  @jax.jit
  def run(key):
    key, reset_key = jax.random.split(key)
    state = venv.reset(reset_key)
    first = state

    def body(state, step_key):
      action = jax.random.uniform(step_key, (2, 1), minval=-1.0, maxval=1.0)
      state = venv.step(state, action)
      return state, state.replace(backend=None)

    state, traj = jax.lax.scan(body, state, jax.random.split(key, 6))
    # Make env 0's simulation diverge, as an unstable policy or model can.
    data = state.backend.data
    data = data.replace(qvel=data.qvel.at[0].set(jnp.nan))
    diverged = venv.step(state.replace(backend=state.backend.replace(data=data)),
                         jnp.zeros((2, 1)))
    return first, state, traj, diverged

  first, state, traj, diverged = run(jax.random.PRNGKey(0))
  for s in (first, state, diverged):
    assert_valid_state(s, spec, (2,))
  chex.assert_shape(traj.obs, (6, 2, 5))
  # DM Control suite tasks do not terminate; the limit (here 5) truncates.
  assert not np.asarray(traj.terminated).any()
  np.testing.assert_array_equal(np.asarray(traj.truncated).any(axis=1),
                                [False] * 4 + [True, False])
  np.testing.assert_allclose(traj.done_return[4], np.asarray(traj.reward[:5]).sum(axis=0),
                             rtol=1e-5)
  # Cartpole balance starts upright: dense reward is close to 1 at first.
  assert 0.5 < float(traj.reward[0].min()) <= 1.0
  # Playground's NaN check ends env 0's episode as terminated, with finite numbers
  # everywhere (the assert_valid_state above) and the simulation reset.
  assert bool(diverged.terminated[0]) and not bool(diverged.terminated[1])
  assert not bool(diverged.truncated[0])
  assert float(diverged.reward[0]) == 0.0
  assert np.isfinite(np.asarray(diverged.backend.data.qvel)).all()


def test_playground_default_episode_length_and_overrides():
  env = envs.make('playground/CartpoleBalance')
  assert env.spec.episode_length == 1000  # from Playground's config, enforced by TimeLimit
  env = envs.make('playground/CartpoleBalance', config_overrides={'episode_length': 50})
  assert env.spec.episode_length == 50
  with pytest.raises(ValueError, match="impl must be 'jax' or 'warp'"):
    envs.make('playground/CartpoleBalance', impl='cuda')
