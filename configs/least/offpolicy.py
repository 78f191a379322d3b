"""LEAST (spec rl.md §3): TD3 or SAC with and without the learned early stop.

    python -m launch.train --config=configs/least/offpolicy.py:td3,hopper,base  --workdir=runs/least/hop_base
    python -m launch.train --config=configs/least/offpolicy.py:td3,hopper,least --workdir=runs/least/hop_least
    python -m launch.analyze --workdir='runs/least/hop_*' --preset=offpolicy --threshold=1000 \
        --out=runs/least/hop_compare

The argument is ``ALGO,ENV,ARM``: ALGO in {td3, sac}; ENV in {hopper, walker2d, ant} (Brax, MJX
pipeline) or {cheetah_run, humanoid_walk, walker_walk} (Playground); ARM in {base, least}.

Both arms use the algorithm's default hyperparameters (lr 3e-4, batch 256, γ 0.99, 25k warm-up
steps, replay ratio 1 with 16 envs and utd 16, 1M replay). The LEAST arm (spec §3.4, values
[secondary / unverified]): window K 250 episodes, t_start 10% of training (MuJoCo-like Brax)
or 5% (DMC-like Playground), ω on, entropy-aware window (h 25, γ_H 0.05) and the exploration-
noise schedule (σ̄ 0.3 for TD3, 0.2 for SAC).
Expected (secondary, approximate): LEAST reaches the base arm's return with fewer env steps
(``--threshold`` in launch.analyze reports steps-to-threshold), with a stop rate that rises
after t_start. Not yet measured here; Brax returns are not comparable with Gym-v4 numbers.
Time: 1M env steps = 1M gradient steps: hours on a 2-core CPU (the paper's own runs take
10-21 h on a GPU); on one GPU an estimated 30-60 min per arm (not yet measured). For a CPU-sized
version of the same comparison see configs/least/pendulum.py.
"""

from jaxlab.rl import sac, td3

_ENVS = {
    "hopper": ("brax/hopper", 0.1),
    "walker2d": ("brax/walker2d", 0.1),
    "ant": ("brax/ant", 0.1),
    "cheetah_run": ("playground/CheetahRun", 0.05),
    "humanoid_walk": ("playground/HumanoidWalk", 0.05),
    "walker_walk": ("playground/WalkerWalk", 0.05),
}
_ALGOS = {"td3": (td3, 0.3), "sac": (sac, 0.2)}


def get_config(arg: str = "td3,hopper,least"):
  algo, env, arm = (arg.split(",") + ["", ""])[:3]
  if algo not in _ALGOS or env not in _ENVS or arm not in ("base", "least"):
    raise ValueError(f"configs/least/offpolicy.py:ALGO,ENV,ARM with ALGO in {sorted(_ALGOS)}, "
                     f"ENV in {sorted(_ENVS)}, ARM in ['base', 'least']; got {arg!r}")
  module, noise_max = _ALGOS[algo]
  name, start = _ENVS[env]
  c = module.default_config()
  c.env.name = name
  c.env.episode_length = 1000
  c.total_env_steps = 1_000_000
  c.num_envs = 16
  c.utd = 16
  c.batch_size = 256
  c.learning_starts = 25_000
  c.actor_lr = 3e-4
  c.critic_lr = 3e-4
  c.normalize_observations = True
  c.replay.capacity = 1_000_000
  if arm == "least":
    c.least.enabled = True
    c.least.window = 250
    c.least.max_window = 500
    c.least.start_fraction = start
    c.least.adaptive_window = True
    c.least.adaptive_noise = True
    c.least.noise_max = noise_max
  c.log_every = 500
  c.eval.every = 2500
  c.eval.num_envs = 16
  c.checkpoint.every = 5000
  return c
