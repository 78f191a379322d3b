"""SAC on gymnax Pendulum-v1 (classic control, pure JAX; 200-step episodes, no termination).

    python -m launch.train --config=configs/sac/pendulum.py --workdir=runs/sac_pendulum

Expected: deterministic eval return about -120 to -160 (a random policy scores about -1200;
the swing-up optimum is about -140). Measured (3 launcher seeds, 32 eval episodes each): -157,
-300, -133 at 6k env steps and -125, -134, -140 at 12k; the mean first passes -250 at 6k.
Time: about 30 s for 3 seeds on a 2-core CPU (measured), of which ~20 s is compilation;
seconds on a GPU. The learning test (tests/rl/test_sac_td3.py) runs this config.
"""

from jaxlab.rl import sac


def get_config():
  c = sac.default_config()
  c.env.name = "gymnax/Pendulum-v1"
  c.env.episode_length = 200
  c.total_env_steps = 12_000
  c.num_envs = 4
  c.utd = 4  # one gradient step per transition
  c.learning_starts = 1000
  c.batch_size = 128
  c.actor_lr = 1e-3
  c.critic_lr = 1e-3
  c.alpha_lr = 1e-3
  c.replay.capacity = 12_000
  c.network.actor_width = 64
  c.network.critic_width = 64
  c.log_every = 250
  c.eval.every = 750
  c.eval.num_envs = 8
  c.checkpoint.every = 1500
  c.target_return = -250.0
  return c
