"""PPO on MuJoCo Playground CheetahRun (DM Control suite in MJX).

    python -m launch.train --config=configs/ppo/cheetah_run.py --workdir=runs/cheetah

Hyperparameters follow MuJoCo Playground's tuned brax PPO config for DM Control tasks (2048
envs, 30-step unrolls, 32 minibatches of 1024 sequences, 16 epochs, lr 1e-3, reward scaling 10,
discount 0.995), at 20M env steps instead of 60M.
Expected: see the table in README.md (measured return and time for CPU and GPU); on a 2-core
CPU this run takes hours; use `--config.num_envs=256 --config.unrolls_per_update=4` and a
smaller total_env_steps there for a look at learning.
"""

from jaxlab.rl import ppo


def get_config():
  c = ppo.default_config()
  c.env.name = "playground/CheetahRun"
  c.env.episode_length = 1000
  c.env.impl = "jax"
  c.total_env_steps = 20_000_000
  c.num_envs = 2048
  c.unroll_length = 30
  c.unrolls_per_update = 16  # 32 minibatches x 1024 sequences / 2048 envs (brax's layout)
  c.num_minibatches = 32
  c.num_epochs = 16
  c.learning_rate = 1e-3
  c.gamma = 0.995
  c.ent_coef = 1e-2
  c.reward_scaling = 10.0
  c.clip_eps = 0.3
  c.log_every = 2
  c.eval.every = 10
  c.eval.num_envs = 128
  c.checkpoint.every = 10
  return c
