"""PPO on gymnax CartPole-v1 (classic control, pure JAX; episodes cut at 500 steps).

    python -m launch.train --config=configs/ppo/cartpole_gymnax.py --workdir=runs/cartpole

Expected: deterministic eval return 500 (the maximum) by the end.
Time: about 30 s on a 2-core CPU, mostly compilation; a few seconds on one GPU.
The learning test (tests/rl/test_ppo.py) runs a shortened version of this config, with the
learner pinned here (PureJaxRL's: advantages once per update) and with PPO's default (once per
epoch); at 100k env steps both clear 400 on seed 0 (seeds 0-2: 499 / 470 / 347 and 500 / 349 /
493, 2026-12-07, 2-core CPU).
"""

from jaxlab.rl import ppo


def get_config():
  c = ppo.default_config()
  c.env.name = "gymnax/CartPole-v1"
  c.env.episode_length = 500
  c.total_env_steps = 200_000
  c.num_envs = 32
  c.unroll_length = 64
  c.num_minibatches = 4
  c.num_epochs = 4
  c.learning_rate = 2.5e-3
  c.lr_schedule = "linear"
  c.max_grad_norm = 0.5
  c.gamma = 0.99
  c.ent_coef = 0.01
  c.normalize_observations = False
  c.advantage_refresh = "update"  # PureJaxRL's learner: advantages once per update
  c.network.activation = "tanh"
  c.network.policy_width = 64
  c.network.policy_depth = 2
  c.network.value_width = 64
  c.network.value_depth = 2
  c.log_every = 5
  c.eval.every = 20
  c.eval.num_envs = 8
  c.checkpoint.every = 20
  c.target_return = 475.0
  return c
