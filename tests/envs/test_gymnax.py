"""gymnax adapter: interface, and terminated vs truncated on CartPole-v1."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlab.envs as envs

from ._checks import assert_valid_state, rollout


@pytest.mark.parametrize('name, obs_shape, discrete, action_size, episode_length', [
    ('gymnax/CartPole-v1', (4,), True, 2, 500),
    ('gymnax/Breakout-MinAtar', (10, 10, 4), True, 3, 1000),
    ('gymnax/Pendulum-v1', (3,), False, 1, 200),
])
def test_interface(name, obs_shape, discrete, action_size, episode_length):
  env = envs.make(name)
  spec = env.spec
  assert (spec.name, spec.obs_shape, spec.discrete, spec.action_size, spec.episode_length) == (
      name, obs_shape, discrete, action_size, episode_length)
  run = rollout(env, num_envs=3, num_steps=40)
  first, last, traj = run(jax.random.PRNGKey(0))
  assert_valid_state(first, spec, (3,))
  assert_valid_state(last, spec, (3,))
  chex.assert_shape(traj.obs, (40, 3) + obs_shape)
  # Same key, same episode; another key, another one.
  _, again, _ = run(jax.random.PRNGKey(0))
  chex.assert_trees_all_equal(again.obs, last.obs)
  _, other, _ = run(jax.random.PRNGKey(1))
  assert not np.allclose(other.obs, last.obs)
  # Episode statistics add up: running return = sum of rewards since the episode start.
  rewards, done = np.asarray(traj.reward), np.asarray(traj.done)
  ret = np.zeros(3)
  for t in range(40):
    ret += rewards[t]
    np.testing.assert_allclose(traj.done_return[t], np.where(done[t], ret, 0.0), rtol=1e-5)
    ret = np.where(done[t], 0.0, ret)
    np.testing.assert_allclose(traj.episode_return[t], ret, rtol=1e-5)


def test_minatar_obs_is_float_and_binary():
  env = envs.make('gymnax/Breakout-MinAtar')
  state = jax.jit(env.reset)(jax.random.PRNGKey(0))
  assert state.obs.dtype == jnp.float32
  assert set(np.unique(np.asarray(state.obs))) <= {0.0, 1.0}
  assert state.obs.sum() > 0


def test_continuous_actions_map_to_env_bounds():
  env = envs.make('gymnax/Pendulum-v1')  # torque bounds [-2, 2]
  state = env.reset(jax.random.PRNGKey(0))
  step = jax.jit(env.step)
  for action, torque in [(1.0, 2.0), (-1.0, -2.0), (0.25, 0.5), (3.0, 2.0)]:
    applied = step(state, jnp.array([action])).backend.last_u
    np.testing.assert_allclose(applied, torque, rtol=1e-6)


def _cartpole_run(policy, num_steps):
  env = envs.make('gymnax/CartPole-v1')
  return rollout(env, 4, num_steps, policy)(jax.random.PRNGKey(0))


def test_cartpole_falling_pole_is_terminated():
  """Always pushing right drops the pole within a few dozen steps: a real terminal state."""
  _, _, traj = _cartpole_run(lambda key, s: jnp.ones((4,), jnp.int32), 60)
  term, trunc = np.asarray(traj.terminated), np.asarray(traj.truncated)
  assert not trunc.any()
  first_end = term.argmax(axis=0)
  assert term.any(axis=0).all() and (first_end < 60).all()
  for env_i, t in enumerate(first_end):
    final = np.asarray(traj.final_obs[t, env_i])
    assert abs(final[2]) > 12 * 2 * np.pi / 360 or abs(final[0]) > 2.4  # the pole fell
    assert np.abs(np.asarray(traj.obs[t, env_i])).max() <= 0.05  # a fresh episode
    # CartPole pays 1 per step, the terminal one included.
    assert traj.done_length[t, env_i] == t + 1 and traj.done_return[t, env_i] == t + 1


def test_cartpole_surviving_500_steps_is_truncated():
  """A hand-tuned linear controller balances for the full 500-step limit of CartPole-v1."""
  def balance(key, state):
    x, x_dot, theta, theta_dot = (state.obs[:, i] for i in range(4))
    return (theta + 0.5 * theta_dot + 0.05 * x + 0.1 * x_dot > 0).astype(jnp.int32)

  _, _, traj = _cartpole_run(balance, 501)
  term, trunc = np.asarray(traj.terminated), np.asarray(traj.truncated)
  assert not term.any()
  np.testing.assert_array_equal(np.argwhere(trunc)[:, 0], [499] * 4)
  np.testing.assert_array_equal(traj.done_length[499], [500] * 4)
  np.testing.assert_array_equal(traj.done_return[499], [500.0] * 4)
  # The reached state is a live one, and the new episode started from a fresh one.
  final = np.asarray(traj.final_obs[499])
  assert (np.abs(final[:, 2]) < 12 * 2 * np.pi / 360).all()
  assert not np.allclose(final, np.asarray(traj.obs[499]))
  np.testing.assert_array_equal(traj.episode_length[500], [1] * 4)


def test_gymnax_imports_without_its_render_only_dependencies():
  """Making a gymnax env loads neither seaborn (with pandas and scipy.stats) nor pyplot; Pong's
  render code still reaches the real seaborn, and a later import gets the real modules."""
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  code = (
      "import sys\n"
      "import jaxlab.envs as envs\n"
      "envs.make('gymnax/CartPole-v1')\n"
      "heavy = [m for m in ('seaborn', 'scipy.stats', 'pandas', 'matplotlib.pyplot') "
      "if m in sys.modules]\n"
      "assert not heavy, heavy\n"
      "from gymnax.environments.misc import pong\n"
      "assert len(pong.sns.color_palette('cubehelix', 3)) == 3\n"
      "import seaborn, matplotlib.pyplot as plt\n"
      "assert type(seaborn).__name__ == 'module' and callable(plt.subplots)\n")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**__import__("os").environ, "JAX_PLATFORMS": "cpu"}, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
