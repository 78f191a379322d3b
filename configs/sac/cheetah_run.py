"""SAC on MuJoCo Playground CheetahRun (DM Control suite in MJX), many parallel envs.

    python -m launch.train --config=configs/sac/cheetah_run.py --workdir=runs/sac_cheetah

Layout after MuJoCo Playground's brax-SAC settings for DM Control: 128 envs, 8 gradient steps
of batch 512 per iteration (replay ratio 1/16 per transition), lr 1e-3, observation
normalisation, 8192 warm-up steps, 1M-transition replay (0.18 GB per seed).
Expected: a rising eval return (CheetahRun's maximum is 1000); not yet measured here.
Time: on a 2-core CPU this is hours (use --config.total_env_steps=100000 for a look); on one
GPU an estimated 10-20 minutes for the 2M steps (not yet measured).
"""

from jaxlab.rl import sac


def get_config():
  c = sac.default_config()
  c.env.name = "playground/CheetahRun"
  c.env.episode_length = 1000
  c.env.impl = "jax"
  c.total_env_steps = 2_000_000
  c.num_envs = 128
  c.utd = 8
  c.batch_size = 512
  c.learning_starts = 8192
  c.actor_lr = 1e-3
  c.critic_lr = 1e-3
  c.alpha_lr = 1e-3
  c.normalize_observations = True
  c.replay.capacity = 1_000_000
  c.log_every = 100
  c.eval.every = 500
  c.eval.num_envs = 16
  c.checkpoint.every = 1000
  return c
