"""Evaluates a jaxlab policy on the original (CPU, C MuJoCo) DeepMind Control suite.

A policy trained on ``playground/<Task>`` sees Playground's flat observation vector. The
original suite returns an ``OrderedDict`` of named parts; ``flatten_observation`` turns it
into exactly Playground's vector for the same physics state. For most tasks that is the
dict's values concatenated in order; three tasks differ (checked by setting the same
``qpos``/``qvel`` in both, see tests/envs/test_dm_control_eval.py):

* pendulum: Playground's ``orientation`` is ``[xz, zz]`` of the pole, dm_control's
  ``[zz, xz]``.
* walker: Playground's "height" entry is the torso's *uprightness* (``xmat[torso, zz]``),
  where dm_control has the torso height (``xpos[torso, z]``); we match Playground.
* fish swim: Playground orders ``upright, joint_angles, target, velocity``; dm_control
  ``joint_angles, upright, target, velocity``.

Control timesteps (``ctrl_dt``) agree for every task Playground ports, but some
simulation substeps differ (Playground's ``sim_dt`` for finger 0.005 vs 0.01, fish 0.002 vs
0.004, pendulum 0.01 vs 0.02), so returns on the original suite can differ from Playground's
even with identical observations. ReacherEasy/Hard do not build with mujoco 3.17 in
Playground 0.2.0.

No rendering is done, so no ``MUJOCO_GL`` is needed.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

# Playground DM Control name -> (domain, task) of the original suite.
PLAYGROUND_TO_DM_CONTROL: dict[str, tuple[str, str]] = {
    'AcrobotSwingup': ('acrobot', 'swingup'),
    'AcrobotSwingupSparse': ('acrobot', 'swingup_sparse'),
    'BallInCup': ('ball_in_cup', 'catch'),
    'CartpoleBalance': ('cartpole', 'balance'),
    'CartpoleBalanceSparse': ('cartpole', 'balance_sparse'),
    'CartpoleSwingup': ('cartpole', 'swingup'),
    'CartpoleSwingupSparse': ('cartpole', 'swingup_sparse'),
    'CheetahRun': ('cheetah', 'run'),
    'FingerSpin': ('finger', 'spin'),
    'FingerTurnEasy': ('finger', 'turn_easy'),
    'FingerTurnHard': ('finger', 'turn_hard'),
    'FishSwim': ('fish', 'swim'),
    'HopperHop': ('hopper', 'hop'),
    'HopperStand': ('hopper', 'stand'),
    'HumanoidRun': ('humanoid', 'run'),
    'HumanoidStand': ('humanoid', 'stand'),
    'HumanoidWalk': ('humanoid', 'walk'),
    'PendulumSwingup': ('pendulum', 'swingup'),
    'PointMass': ('point_mass', 'easy'),
    'ReacherEasy': ('reacher', 'easy'),
    'ReacherHard': ('reacher', 'hard'),
    'SwimmerSwimmer6': ('swimmer', 'swimmer6'),
    'WalkerRun': ('walker', 'run'),
    'WalkerStand': ('walker', 'stand'),
    'WalkerWalk': ('walker', 'walk'),
}


def _flat(x: Any) -> np.ndarray:
  return np.asarray(x, np.float32).reshape(-1)


def flatten_observation(domain: str, task: str, observation: Mapping[str, Any],
                        physics: Any) -> np.ndarray:
  """dm_control's observation dict as Playground's flat vector for the same task.

  Args:
    domain, task: the suite task, e.g. ``("cartpole", "balance")``.
    observation: ``time_step.observation``.
    physics: ``env.physics`` (needed where Playground observes something dm_control does
      not, e.g. walker's torso uprightness).

  Returns:
    ``[obs_dim]`` float32.
  """
  parts = dict(observation)
  if domain == 'pendulum':
    parts['orientation'] = _flat(parts['orientation'])[::-1]
    order = list(observation)
  elif domain == 'walker':
    parts['height'] = physics.named.data.xmat['torso', 'zz']
    order = list(observation)
  elif domain == 'fish' and task == 'swim':
    order = ['upright', 'joint_angles', 'target', 'velocity']
  else:
    order = list(observation)
  return np.concatenate([_flat(parts[k]) for k in order])


def evaluate(
    policy_fn: Callable[[np.ndarray], np.ndarray],
    domain: str,
    task: str,
    num_episodes: int,
    seed: int,
    *,
    action_repeat: int = 1,
    max_steps: int | None = None,
) -> dict[str, Any]:
  """Runs ``num_episodes`` episodes of ``policy_fn`` on ``suite.load(domain, task)``.

  Args:
    policy_fn: maps a ``[obs_dim]`` float32 observation (Playground's layout, see
      ``flatten_observation``; apply the training-time observation normalisation inside)
      to a ``[action_dim]`` action in ``[-1, 1]``, which is clipped and mapped onto the
      task's action bounds (``[-1, 1]`` in the whole suite).
    domain, task: e.g. ``"cheetah", "run"``. ``PLAYGROUND_TO_DM_CONTROL`` maps names.
    num_episodes: episodes to run (sequentially, on this process's CPU).
    seed: seeds the task's initial-state randomness; same seed, same episodes.
    action_repeat: env steps per policy step, as in training.
    max_steps: stop each episode after this many policy steps (default: the suite's own
      limit, 1000 control steps for most tasks).

  Returns:
    ``{"mean_return": float, "std_return": float, "returns": [num_episodes] np.ndarray}``,
    undiscounted returns.
  """
  from dm_control import suite  # Deferred: importing dm_control takes seconds.

  if num_episodes < 1:
    raise ValueError(f'evaluate: num_episodes must be >= 1, got {num_episodes}')
  env = suite.load(domain, task, task_kwargs={'random': seed})
  spec = env.action_spec()
  low = np.broadcast_to(spec.minimum, spec.shape).astype(np.float64)
  high = np.broadcast_to(spec.maximum, spec.shape).astype(np.float64)

  returns = np.zeros(num_episodes, np.float64)
  for episode in range(num_episodes):
    time_step = env.reset()
    steps = 0
    while not time_step.last() and (max_steps is None or steps < max_steps):
      obs = flatten_observation(domain, task, time_step.observation, env.physics)
      action = np.asarray(policy_fn(obs), np.float64)
      if action.shape != spec.shape:
        raise ValueError(f'evaluate({domain}/{task}): policy_fn returned an action of shape '
                         f'{action.shape}, expected {spec.shape}')
      action = low + (np.clip(action, -1.0, 1.0) + 1.0) * 0.5 * (high - low)
      for _ in range(action_repeat):
        time_step = env.step(action)
        returns[episode] += time_step.reward or 0.0
        if time_step.last():
          break
      steps += 1
  return {
      'mean_return': float(returns.mean()),
      'std_return': float(returns.std()),
      'returns': returns,
  }
