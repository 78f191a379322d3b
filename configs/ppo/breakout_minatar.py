"""PPO on gymnax Breakout-MinAtar (10x10x4 frames, flattened into an MLP).

    python -m launch.train --config=configs/ppo/breakout_minatar.py --workdir=runs/breakout

Hyperparameters follow PureJaxRL's MinAtar PPO (64 envs x 128 steps, 8 minibatches, 4 epochs,
lr 5e-4 annealed, clip 0.2, grad-norm 0.5, advantages computed once per update), at 5M env
steps.
Expected: not yet run to completion here, so no return is claimed; time on CPU and GPU not
measured yet.
"""

from jaxlab.rl import ppo


def get_config():
  c = ppo.default_config()
  c.env.name = "gymnax/Breakout-MinAtar"
  c.env.episode_length = 1000  # gymnax MinAtar default time limit
  c.total_env_steps = 5_000_000
  c.num_envs = 64
  c.unroll_length = 128
  c.num_minibatches = 8
  c.num_epochs = 4
  c.learning_rate = 5e-4
  c.lr_schedule = "linear"
  c.max_grad_norm = 0.5
  c.gamma = 0.99
  c.ent_coef = 0.01
  c.normalize_observations = False
  c.advantage_refresh = "update"  # PureJaxRL's learner: advantages once per update
  c.network.activation = "relu"
  c.network.policy_width = 256
  c.network.policy_depth = 2
  c.network.value_width = 256
  c.network.value_depth = 2
  c.log_every = 20
  c.eval.every = 100
  c.eval.num_envs = 16
  c.checkpoint.every = 100
  return c
