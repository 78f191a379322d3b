"""TD3 on MuJoCo Playground CheetahRun (DM Control suite in MJX), many parallel envs.

    python -m launch.train --config=configs/td3/cheetah_run.py --workdir=runs/td3_cheetah

Same layout as configs/sac/cheetah_run.py (128 envs, 8 critic steps of batch 512 per
iteration, lr 1e-3, observation normalisation) with TD3's exploration noise 0.1, target
smoothing 0.2 clipped at 0.5 and actor/target updates every 2nd critic step.
Expected: a rising eval return (CheetahRun's maximum is 1000); not yet measured here.
Time: on a 2-core CPU this is hours; on one GPU an estimated 10-20 minutes (not yet measured).
"""

from jaxlab.rl import td3


def get_config():
  c = td3.default_config()
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
  c.normalize_observations = True
  c.replay.capacity = 1_000_000
  c.log_every = 100
  c.eval.every = 500
  c.eval.num_envs = 16
  c.checkpoint.every = 1000
  return c
