"""The original dm_control suite seen through Playground's observation layout."""

import mujoco
import numpy as np
import pytest
from mujoco import mjx

from jaxlab.envs import dm_control_eval


def _same_state_observations(playground_name, steps=5):
  """Our flattening of dm_control's obs, and Playground's own ``_get_obs`` on the same state.

  The dm_control episode runs a few random steps (non-zero velocities); its ``qpos``/``qvel``
  are then copied into Playground's model and forwarded with C MuJoCo, so both observation
  functions see one physical state through their own models.
  """
  from dm_control import suite
  from mujoco_playground import registry

  domain, task = dm_control_eval.PLAYGROUND_TO_DM_CONTROL[playground_name]
  dm_env = suite.load(domain, task, task_kwargs={'random': 0})
  time_step = dm_env.reset()
  rng = np.random.default_rng(0)
  for _ in range(steps):
    time_step = dm_env.step(rng.uniform(-1, 1, dm_env.action_spec().shape))
  ours = dm_control_eval.flatten_observation(domain, task, time_step.observation,
                                             dm_env.physics)

  pg_env = registry.load(playground_name, config_overrides={'impl': 'jax'})
  model = pg_env.mj_model
  data = mujoco.MjData(model)
  data.qpos[:] = dm_env.physics.data.qpos
  data.qvel[:] = dm_env.physics.data.qvel
  mujoco.mj_forward(model, data)
  mjx_data = mjx.put_data(model, data, impl='jax')
  theirs = np.asarray(pg_env._get_obs(mjx_data, {}))  # pylint: disable=protected-access
  naive = np.concatenate([np.ravel(v) for v in time_step.observation.values()])
  return ours, theirs, naive


@pytest.mark.parametrize('playground_name', ['CartpoleBalance', 'CheetahRun'])
def test_layout_matches_playground(playground_name):
  ours, theirs, _ = _same_state_observations(playground_name)
  assert ours.dtype == np.float32
  assert ours.shape == theirs.shape
  np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
  assert np.abs(theirs).max() > 1e-3  # a non-trivial state


@pytest.mark.parametrize('playground_name', ['WalkerWalk', 'PendulumSwingup'])
def test_layout_fixes_where_plain_concatenation_differs(playground_name):
  ours, theirs, naive = _same_state_observations(playground_name)
  np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
  assert not np.allclose(naive, theirs, atol=1e-3)


def test_evaluate_short_episode():
  seen = []

  def policy(obs):
    seen.append(obs)
    return np.zeros(1)

  result = dm_control_eval.evaluate(policy, 'cartpole', 'balance', num_episodes=1, seed=0,
                                    max_steps=20)
  assert len(seen) == 20 and seen[0].shape == (5,) and seen[0].dtype == np.float32
  assert result['returns'].shape == (1,)
  # Balance starts upright, so the dense reward is close to 1 per step.
  assert 15.0 < result['mean_return'] <= 20.0
  assert result['std_return'] == 0.0
  again = dm_control_eval.evaluate(policy, 'cartpole', 'balance', num_episodes=1, seed=0,
                                   max_steps=20)
  assert again['mean_return'] == result['mean_return']


def test_evaluate_rejects_wrong_action_shape():
  with pytest.raises(ValueError, match=r'expected \(1,\)'):
    dm_control_eval.evaluate(lambda obs: np.zeros(2), 'cartpole', 'balance', 1, 0, max_steps=2)
