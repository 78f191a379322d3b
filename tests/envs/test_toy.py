"""toy/DeadEndCorridor: goal pays, the dead end traps for good, nothing terminates, the time
limit truncates at 100 steps."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab import envs


def _rollout(env, action, steps=100, seed=0):
  state = env.reset(jax.random.PRNGKey(seed))
  step = jax.jit(env.step)
  out = []
  for _ in range(steps):
    state = step(state, jnp.array([action], jnp.float32))
    out.append(state)
  return out


def test_dead_end_traps_and_goal_pays():
  env = envs.make("toy/DeadEndCorridor")
  assert env.spec.obs_shape == (1,) and env.spec.action_size == 1
  assert env.spec.episode_length == 100
  right = _rollout(env, 1.0)
  rewards = np.array([float(s.reward) for s in right])
  assert rewards[:7].sum() == 0 and np.all(rewards[9:] == 1.0)  # goal x >= 0.8 after 8-9 steps
  assert not any(bool(s.terminated) for s in right)
  assert bool(right[-1].truncated) and float(right[-1].done_return) == rewards.sum()
  # Into the dead end, then try to leave it: x does not move and every step pays -0.1.
  env_no_reset = envs.make("toy/DeadEndCorridor", auto_reset=False)
  left = _rollout(env_no_reset, -1.0, steps=10)
  x_in = float(left[-1].obs[0])
  assert x_in < -0.5 and float(left[-1].reward) == np.float32(-0.1)
  state = left[-1]
  for _ in range(5):
    state = env_no_reset.step(state, jnp.array([1.0]))
  assert float(state.obs[0]) == x_in and float(state.reward) == np.float32(-0.1)



def test_dead_end_lure_pays_on_entry_then_traps_and_goal_is_far():
  """toy/DeadEndLure: +1 on the step that enters the dead end, then stuck at -0.1 per step;
  the goal is 12 steps right; parameters override, and DeadEndCorridor keeps its defaults."""
  env = envs.make("toy/DeadEndLure", auto_reset=False)
  assert env.spec.episode_length == 100
  left = _rollout(env, -1.0, steps=10)
  r = np.array([float(s.reward) for s in left])
  x = np.array([float(s.obs[0]) for s in left])
  entered = int(np.argmax(x < -0.3))
  assert 2 <= entered <= 3 and r[:entered].sum() == 0 and r[entered] == 1.0
  assert np.all(r[entered + 1:] == np.float32(-0.1)) and np.all(x[entered:] == x[entered])
  state = left[-1]
  for _ in range(3):
    state = env.step(state, jnp.array([1.0]))
  assert float(state.obs[0]) == x[-1] and float(state.reward) == np.float32(-0.1)
  right = np.array([float(s.reward) for s in _rollout(env, 1.0, steps=100)])
  assert right[:11].sum() == 0 and np.all(right[13:] == 1.0)  # x >= 1.2 after 12-13 steps
  assert 87 <= right.sum() <= 89
  short = envs.make("toy/DeadEndLure", goal=0.5, auto_reset=False)
  assert np.array([float(s.reward) for s in _rollout(short, 1.0, steps=8)])[6:].min() == 1.0
  assert envs.make("toy/DeadEndCorridor").unwrapped.params.entry_reward is None
