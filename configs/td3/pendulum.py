"""TD3 on gymnax Pendulum-v1 (classic control, pure JAX; 200-step episodes, no termination).

    python -m launch.train --config=configs/td3/pendulum.py --workdir=runs/td3_pendulum

Expected: deterministic eval return about -130 to -160 (a random policy scores about -1200;
the swing-up optimum is about -140). Measured (3 launcher seeds, 32 eval episodes each): -127,
-153, -162 at 9k env steps and -126, -136, -142 at 12k; the learning test's key
(jax.random.PRNGKey(0)) is a slower seed, about -230 at 16k, hence the 16k budget.
Time: about 25 s for 3 seeds on a 2-core CPU (measured), mostly compilation; seconds on a GPU.
The learning test (tests/rl/test_sac_td3.py) runs this config.
"""

from jaxlab.rl import td3


def get_config():
  c = td3.default_config()
  c.env.name = "gymnax/Pendulum-v1"
  c.env.episode_length = 200
  c.total_env_steps = 16_000
  c.num_envs = 4
  c.utd = 4  # one critic step per transition
  c.learning_starts = 1000
  c.batch_size = 256
  c.actor_lr = 3e-4
  c.critic_lr = 1e-3
  c.exploration_noise = 0.1
  c.policy_delay = 2
  c.replay.capacity = 16_000
  c.network.actor_width = 64
  c.network.critic_width = 64
  c.log_every = 250
  c.eval.every = 1000
  c.eval.num_envs = 8
  c.checkpoint.every = 2000
  c.target_return = -250.0
  return c
