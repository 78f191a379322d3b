"""Wrapper semantics on a deterministic toy env whose numbers are known in advance."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.core import running_stats
from jaxlab.envs import (ActionRepeat, AutoReset, EnvSpec, NormalizeObservation, TimeLimit,
                         VecEnv, _common)

from ._checks import assert_valid_state, rollout

RESET_CALLS = []


class CountingEnv:
  """obs = [t, tag]; the step that reaches t earns reward t; terminates at t == horizon.

  ``tag`` is drawn from the reset key, so a new episode is told apart from the old one.
  ``horizon`` is fixed, or drawn per episode from ``horizon_range`` (inclusive) when
  ``horizon='random'``; ``horizon=0`` never terminates.
  """

  def __init__(self, horizon=0, count_resets=False, horizon_range=(2, 6)):
    self.horizon = horizon
    self.horizon_range = horizon_range
    self.count_resets = count_resets
    self.spec = EnvSpec(name='toy/counting', obs_shape=(2,), discrete=False, action_size=1,
                        episode_length=100)

  def reset(self, key):
    if self.count_resets:
      jax.debug.callback(lambda: RESET_CALLS.append(1))
    key, tag_key, horizon_key = jax.random.split(key, 3)
    if self.horizon == 'random':
      low, high = self.horizon_range
      horizon = jax.random.randint(horizon_key, (), low, high + 1)
    else:
      horizon = jnp.int32(self.horizon)
    backend = {'t': jnp.int32(0), 'tag': jax.random.uniform(tag_key), 'horizon': horizon}
    return _common.first_state(backend, jnp.stack([0.0, backend['tag']]), key)

  def step(self, state, action):
    del action
    b = state.backend
    t = b['t'] + 1
    backend = dict(b, t=t)
    terminated = jnp.logical_and(b['horizon'] > 0, t >= b['horizon'])
    obs = jnp.stack([t.astype(jnp.float32), b['tag']])
    return _common.next_state(state, backend=backend, obs=obs, reward=t.astype(jnp.float32),
                              terminated=terminated, key=state.key)


def _run_single(env, num_steps, seed=0):
  """Steps one env (batch of 1) and returns the trajectory as numpy, [T] per field."""
  _, last, traj = rollout(env, 1, num_steps)(jax.random.PRNGKey(seed))
  assert_valid_state(last, env.spec, (1,))
  return jax.tree.map(lambda x: np.asarray(x)[:, 0], traj)


def test_time_limit_truncates_at_exactly_episode_length():
  env = AutoReset(TimeLimit(CountingEnv(horizon=0), 5))
  assert env.spec.episode_length == 5
  traj = _run_single(env, 12)
  np.testing.assert_array_equal(np.flatnonzero(traj.truncated), [4, 9])
  assert not traj.terminated.any()
  np.testing.assert_array_equal(traj.done_length[[4, 9]], [5, 5])
  np.testing.assert_array_equal(traj.episode_length, [1, 2, 3, 4, 0] * 2 + [1, 2])


def test_time_limit_does_not_truncate_a_terminal_step():
  env = TimeLimit(CountingEnv(horizon=5), 5)
  traj = _run_single(env, 5)
  assert traj.terminated[4] and not traj.truncated[4]
  assert not traj.terminated[:4].any() and not traj.truncated.any()


def test_auto_reset_keeps_reached_obs_and_finished_episode_stats():
  env = AutoReset(TimeLimit(CountingEnv(horizon=4), 100))
  traj = _run_single(env, 9)
  done_steps = np.flatnonzero(traj.terminated)
  np.testing.assert_array_equal(done_steps, [3, 7])
  for i in done_steps:
    # final_obs is the reached terminal observation t=4 of the old episode ...
    assert traj.final_obs[i, 0] == 4.0
    # ... obs is the first observation of a new episode with a fresh tag.
    assert traj.obs[i, 0] == 0.0
    assert traj.obs[i, 1] != traj.final_obs[i, 1]
    assert traj.done_return[i] == 1 + 2 + 3 + 4
    assert traj.done_length[i] == 4
    assert traj.episode_return[i] == 0.0 and traj.episode_length[i] == 0
  not_done = np.flatnonzero(~traj.terminated)
  np.testing.assert_array_equal(traj.final_obs[not_done], traj.obs[not_done])
  assert (traj.done_return[not_done] == 0).all() and (traj.done_length[not_done] == 0).all()
  # The two resets drew different episodes (keys split from state.key, not reused).
  assert traj.obs[3, 1] != traj.obs[7, 1]


def test_lazy_and_eager_auto_reset_agree_and_lazy_resets_only_when_needed():
  """2 envs x 2 seeds (nested vmap) with random horizons in [4, 8] end at different steps."""
  num_envs, num_steps = 2, 12

  def run(lazy):
    inner = CountingEnv(horizon='random', count_resets=True, horizon_range=(4, 8))
    venv = VecEnv(AutoReset(TimeLimit(inner, 10), lazy=lazy), num_envs)

    def one_seed(key):
      state = venv.reset(key)
      def body(state, _):
        state = venv.step(state, jnp.zeros((num_envs, 1)))
        return state, state
      return jax.lax.scan(body, state, None, length=num_steps)[1]

    keys = jax.random.split(jax.random.PRNGKey(7), 2)
    fn = jax.jit(jax.vmap(one_seed))
    jax.block_until_ready(fn(keys))  # compile; count only the second call
    jax.effects_barrier()
    RESET_CALLS.clear()
    out = jax.block_until_ready(fn(keys))
    jax.effects_barrier()
    return out, len(RESET_CALLS)

  lazy_traj, lazy_calls = run(True)
  eager_traj, eager_calls = run(False)
  chex.assert_trees_all_equal(lazy_traj, eager_traj)
  any_done = np.asarray(lazy_traj.done).any(axis=(0, 2))  # [T]: some env of some seed ended
  assert any_done.any() and not any_done.all()
  # One call is the initial (batched) reset. Then the lazy reset runs once per step at which
  # any env of any seed ended an episode (the nested vmap keeps the any-reduction at both
  # levels); the eager one runs at every step.
  assert lazy_calls == 1 + int(any_done.sum()), (lazy_calls, any_done)
  assert eager_calls == 1 + num_steps


def test_action_repeat_sums_rewards_and_stops_at_termination():
  env = AutoReset(TimeLimit(ActionRepeat(CountingEnv(horizon=7), 3), 100))
  assert env.spec.episode_length == 100
  assert ActionRepeat(CountingEnv(), 3).spec.episode_length == math.ceil(100 / 3)
  traj = _run_single(env, 4)
  # t = 1..3, 4..6, then t = 7 terminates: the two discarded inner steps add nothing.
  np.testing.assert_array_equal(traj.reward[:3], [6.0, 15.0, 7.0])
  np.testing.assert_array_equal(traj.terminated[:3], [False, False, True])
  assert traj.final_obs[2, 0] == 7.0 and traj.obs[2, 0] == 0.0
  assert traj.done_return[2] == 28.0 and traj.done_length[2] == 3
  np.testing.assert_array_equal(traj.episode_length[:4], [1, 2, 0, 1])
  assert traj.reward[3] == 6.0


def test_action_repeat_below_time_limit_counts_agent_steps():
  env = TimeLimit(ActionRepeat(CountingEnv(horizon=0), 3), 2)
  traj = _run_single(env, 2)
  np.testing.assert_array_equal(traj.truncated, [False, True])
  assert traj.final_obs[1, 0] == 6.0 and traj.done_length[1] == 2 and traj.done_return[1] == 21


def _raw_and_normalized(frozen, initial_stats=None):
  env = AutoReset(TimeLimit(CountingEnv(horizon='random'), 100))
  num_envs, num_steps = 4, 6
  raw_env = VecEnv(env, num_envs)
  norm_env = NormalizeObservation(raw_env, frozen=frozen, initial_stats=initial_stats)

  def run(venv, key):
    state = venv.reset(key)
    def body(state, _):
      state = venv.step(state, jnp.zeros((num_envs, 1)))
      return state, state
    return state, jax.lax.scan(body, state, None, length=num_steps)
  key = jax.random.PRNGKey(3)
  return jax.jit(lambda k: run(raw_env, k))(key), jax.jit(lambda k: run(norm_env, k))(key)


def test_normalize_observation_tracks_stats_of_all_raw_observations():
  (raw_first, (_, raw)), (norm_first, (last, norm)) = _raw_and_normalized(frozen=False)
  seen = np.concatenate([np.asarray(raw_first.obs)[None], np.asarray(raw.obs)]).reshape(-1, 2)
  stats = NormalizeObservation.stats(last)
  np.testing.assert_allclose(stats.mean, seen.mean(0), rtol=1e-5)
  np.testing.assert_allclose(stats.var, seen.var(0), rtol=1e-4)
  assert float(stats.count) == seen.shape[0]
  # The statistics are stored once per env, identical across the batch.
  chex.assert_shape(last.extras['obs_norm'].mean, (4, 2))
  # obs and final_obs of the last step are normalised with the statistics after the update.
  expected = np.clip((np.asarray(raw.obs[-1]) - stats.mean) / np.sqrt(stats.var + 1e-8), -5, 5)
  np.testing.assert_allclose(norm.obs[-1], expected, rtol=1e-5, atol=1e-6)
  expected_final = np.clip(
      (np.asarray(raw.final_obs[-1]) - stats.mean) / np.sqrt(stats.var + 1e-8), -5, 5)
  np.testing.assert_allclose(norm.final_obs[-1], expected_final, rtol=1e-5, atol=1e-6)
  # Everything else is untouched.
  np.testing.assert_array_equal(norm.reward, raw.reward)
  np.testing.assert_array_equal(norm.done, raw.done)


def test_normalize_observation_frozen_keeps_given_stats():
  given = running_stats.RunningStats(mean=jnp.array([1.0, 0.5]), var=jnp.array([4.0, 1.0]),
                                     count=jnp.float32(10.0))
  (_, (_, raw)), (_, (last, norm)) = _raw_and_normalized(frozen=True, initial_stats=given)
  chex.assert_trees_all_close(NormalizeObservation.stats(last), given)
  expected = (np.asarray(raw.obs) - np.array([1.0, 0.5])) / np.sqrt(np.array([4.0, 1.0]) + 1e-8)
  np.testing.assert_allclose(norm.obs, np.clip(expected, -5, 5), rtol=1e-5, atol=1e-6)


def test_bad_wrapper_arguments_raise():
  with pytest.raises(ValueError, match='episode_length'):
    TimeLimit(CountingEnv(), 0)
  with pytest.raises(ValueError, match='repeat'):
    ActionRepeat(CountingEnv(), 0)
  with pytest.raises(ValueError, match='num_envs'):
    VecEnv(CountingEnv(), 0)


def test_typed_prng_keys_through_the_stack_and_nested_vmap():
  """New-style ``jax.random.key`` keys work everywhere raw uint32 keys do."""
  import jaxlab.envs as envs

  env = NormalizeObservation(envs.VecEnv(envs.make('gymnax/CartPole-v1', episode_length=5,
                                                   action_repeat=2), 3))

  def run(key):
    state = env.reset(key)
    def body(state, _):
      state = env.step(state, jnp.ones((3,), jnp.int32))
      return state, state.done
    return jax.lax.scan(body, state, None, length=6)

  state, done = jax.jit(jax.vmap(run))(jax.random.split(jax.random.key(0), 2))
  assert jax.dtypes.issubdtype(state.key.dtype, jax.dtypes.prng_key)
  chex.assert_shape(state.obs, (2, 3, 4))
  assert np.asarray(done).sum() >= 6  # every env ends at least one 5-step episode
