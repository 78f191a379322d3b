"""LEAST on a CPU budget: TD3 on gymnax Pendulum-v1, with and without the stop rule.

    python -m launch.train --config=configs/least/pendulum.py:base  --workdir=runs/least/pend_base
    python -m launch.train --config=configs/least/pendulum.py:least --workdir=runs/least/pend_least
    python -m launch.analyze --workdir=runs/least/pend_base,runs/least/pend_least \
        --preset=offpolicy --threshold=-250 --out=runs/least/pend_compare

A smoke-scale version of configs/least/offpolicy.py (3 seeds, 20k env steps): the mechanics
(stop rate after t_start, where in the episode stops happen, truncation handling, steps to
threshold) show up in minutes. Pendulum starts every episode in a random state, so Q̂ at the
first steps mostly reflects the start state and many stops happen early in the episode; this
task says nothing about LEAST's benefit on locomotion.
Measured (rerun 2026-12-03, 2-core CPU shared with the test suite, 3 seeds; mean ± 95%
Student-t interval over seeds, as docs/reproductions/least.md): stop rate 0.884 ± 0.086 once
active, stops at step 7.4 ± 3.1 of 200 on average (97% in the first quarter); env steps to eval
return -250: 7300 ± 2900 in both arms; share of the buffer with reward < -2 at the end
0.273 ± 0.065 (least) vs 0.303 ± 0.027 (base).
Time: 47-84 s per arm on a 2-core CPU (measured, compilation included); seconds on a GPU.
For a task with a dead end, see configs/least/dead_end.py.
"""

from jaxlab.rl import td3


def get_config(arm: str = "least"):
  if arm not in ("base", "least"):
    raise ValueError(f"configs/least/pendulum.py:ARM with ARM in ['base', 'least']; got {arm!r}")
  c = td3.default_config()
  c.env.name = "gymnax/Pendulum-v1"
  c.env.episode_length = 200
  c.num_seeds = 3
  c.total_env_steps = 20_000
  c.num_envs = 4
  c.utd = 4
  c.learning_starts = 1000
  c.batch_size = 256
  c.actor_lr = 3e-4
  c.critic_lr = 1e-3
  c.replay.capacity = 20_000
  c.network.actor_width = 64
  c.network.critic_width = 64
  # Diagnostic in both arms: share of the replay buffer with reward < -2 (pendulum more than
  # ~80 degrees from upright, or spinning fast), logged as replay/low_reward_share.
  c.least.low_reward = -2.0
  if arm == "least":
    c.least.enabled = True
    c.least.window = 20
    c.least.max_window = 40
    c.least.min_episodes = 5
    c.least.start_fraction = 0.2
    c.least.adaptive_window = True
    c.least.window_step = 5
    c.least.adaptive_noise = True
    c.least.noise_max = 0.3
  c.log_every = 250
  c.eval.every = 500
  c.eval.num_envs = 16
  c.checkpoint.every = 2500
  c.target_return = -250.0
  return c
