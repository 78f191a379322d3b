"""Brax adapter: interface (ant) and termination mapping (inverted pendulum, default MJX)."""

import jax
import numpy as np

import jaxlab.envs as envs
from jaxlab.envs import brax_envs

from ._checks import assert_valid_state, rollout


def test_ant_interface():
  # spring compiles ~5x faster than the default mjx on CPU; the adapter code is the same.
  env = envs.make('brax/ant', backend='spring')
  spec = env.spec
  assert (spec.name, spec.obs_shape, spec.discrete, spec.action_size, spec.episode_length) == (
      'brax/ant', (27,), False, 8, 1000)
  first, last, traj = rollout(env, 2, 5)(jax.random.PRNGKey(0))
  assert_valid_state(first, spec, (2,))
  assert_valid_state(last, spec, (2,))
  assert not np.allclose(first.obs, last.obs)
  np.testing.assert_allclose(last.episode_return, np.asarray(traj.reward).sum(0), rtol=1e-5)


def test_falling_pole_is_terminated_with_default_backend():
  env = envs.make('brax/inverted_pendulum')
  assert brax_envs.DEFAULT_BACKEND == 'mjx'
  assert env.unwrapped.backend_name == 'mjx'
  _, last, traj = rollout(env, 2, 60)(jax.random.PRNGKey(0))
  assert_valid_state(last, env.spec, (2,))
  term = np.asarray(traj.terminated)
  assert term.any(axis=0).all(), 'random actions should drop the pole within 60 steps'
  assert not np.asarray(traj.truncated).any()
  for i, t in enumerate(term.argmax(axis=0)):  # first termination of each env
    # Brax's done = the pole left its range: the reached obs shows it, the new episode's not.
    assert abs(float(traj.final_obs[t, i, 1])) > 0.2
    assert abs(float(traj.obs[t, i, 1])) < 0.2
    assert traj.done_length[t, i] == t + 1
