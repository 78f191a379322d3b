"""LEAST on a task with a dead end: TD3 on toy/DeadEndCorridor, with and without the stop rule.

    python -m launch.train --config=configs/least/dead_end.py:base  --workdir=runs/least/de_base
    python -m launch.train --config=configs/least/dead_end.py:least --workdir=runs/least/de_least
    python -m launch.analyze --workdir=runs/least/de_base,runs/least/de_least \
        --preset=offpolicy --threshold=80 --out=runs/least/de_compare

The task (``jaxlab/envs/toy.py``): a point on a line, +1 per step in the goal region x >= 0.8,
and a dead end x < -0.5 where it is stuck for the rest of the 100-step episode at -0.1 per
step; a uniform random policy falls in on 37% of episodes and reaches the goal on 16%. That is
the "sunk cost" LEAST is about (spec rl.md §3.1): an episode in the dead end can only waste env
steps and fill the buffer with transitions that teach nothing new. Both arms log
``replay/low_reward_share``, the share of the replay buffer that lies in the dead end.

3 seeds vmapped, 10k env steps, 4 envs x 4 gradient steps (replay ratio 1), evaluation every
200 env steps; LEAST from 10% of the run (1000 env steps, the end of warm-up) with a 20-episode
window (adaptive, up to 40), ω on, noise schedule up to σ̄ 0.3.
Results and time: docs/reproductions/least.md.
"""

from jaxlab.rl import td3


def get_config(arm: str = "least"):
  if arm not in ("base", "least"):
    raise ValueError(f"configs/least/dead_end.py:ARM with ARM in ['base', 'least']; got {arm!r}")
  c = td3.default_config()
  c.env.name = "toy/DeadEndCorridor"
  c.env.episode_length = 100
  c.num_seeds = 3
  c.total_env_steps = 10_000
  c.num_envs = 4
  c.utd = 4
  c.learning_starts = 1000
  c.batch_size = 256
  c.actor_lr = 3e-4
  c.critic_lr = 1e-3
  c.replay.capacity = 10_000
  c.network.actor_width = 64
  c.network.critic_width = 64
  c.least.low_reward = -0.05  # dead-end transitions pay -0.1, all others >= 0
  if arm == "least":
    c.least.enabled = True
    c.least.window = 20
    c.least.max_window = 40
    c.least.min_episodes = 5
    c.least.start_fraction = 0.1
    c.least.adaptive_window = True
    c.least.window_step = 5
    c.least.adaptive_noise = True
    c.least.noise_max = 0.3
  c.log_every = 50  # 200 env steps: a fine grid for steps-to-threshold
  c.eval.every = 50
  c.eval.num_envs = 16
  c.checkpoint.every = 0
  c.target_return = 80.0
  return c
