"""PPO on MuJoCo Playground CartpoleBalance (DM Control suite in MJX, `impl="jax"`).

The quickstart:
    python -m launch.train --config=configs/ppo/cartpole_balance.py --workdir=runs/quickstart

Expected: deterministic eval return >= 900 (of 1000) at the end.
Time: about 1.5 minutes on a 2-core CPU (jax 0.10.2), of which ~40 s is compilation and
evaluation; the same schedule runs at ~1.25M env-steps/s on one H200 (see README.md).

Advantages are computed once per update (`advantage_refresh="update"`, pinned here): every
number above was recorded with it, and on this config's schedule of many small updates (cut to
327,680 env steps, 10 seeds) recomputing them every epoch, PPO's default since 2026-12-07,
showed no effect (-65 ± 290, README, "The epoch refresh at the quickstart's schedule").
"""

from jaxlab.rl import ppo


def get_config():
  c = ppo.default_config()
  c.env.name = "playground/CartpoleBalance"
  c.env.episode_length = 1000
  c.env.impl = "jax"
  c.total_env_steps = 1_000_000
  c.num_envs = 256
  c.unroll_length = 32
  c.num_minibatches = 8
  c.num_epochs = 4
  c.learning_rate = 1e-3
  c.gamma = 0.995
  c.ent_coef = 1e-2
  c.reward_scaling = 10.0
  c.clip_eps = 0.3
  c.log_every = 10
  c.eval.every = 20
  c.eval.num_envs = 16
  c.checkpoint.every = 40
  c.target_return = 900.0
  c.advantage_refresh = "update"  # the recorded numbers above; see the docstring
  return c
