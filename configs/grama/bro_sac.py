"""GraMa / ReGraMa (spec rl.md §4): SAC with BRO's residual LayerNorm networks, three arms.

    python -m launch.train --config=configs/grama/bro_sac.py:cheetah_run,vanilla --workdir=runs/grama/cr_vanilla
    python -m launch.train --config=configs/grama/bro_sac.py:cheetah_run,redo    --workdir=runs/grama/cr_redo
    python -m launch.train --config=configs/grama/bro_sac.py:cheetah_run,regrama --workdir=runs/grama/cr_regrama
    python -m launch.analyze --workdir='runs/grama/cr_*' --preset=offpolicy --out=runs/grama/cr_compare

The argument is ``ENV,METHOD``: ENV in {cheetah_run, humanoid_walk} (Playground; there is no Dog
domain, spec §6) or pendulum (gymnax Pendulum-v1, the CPU-sized check), METHOD in {vanilla,
redo, regrama}.

Settings (spec §4.4, BRO "fast"): critic BroNet with 2 blocks, actor BroNet with 1 block, width
256, actor lr 1e-4, critic lr 1e-3, replay ratio 2 (utd = 2 x num_envs), batch 128, γ 0.99,
1M replay; resets every 1000 gradient steps with τ 0.02 (ReDo) or 0.01 (ReGraMa, paper form
dL/dh); health (dormant and GraMa ratios of actor and critic) every 1000 gradient steps.
Expected (spec §7.2): with the LN-residual critic the ReDo ratio stays near 0 or is
uninformative while the GraMa ratio grows during training and ReGraMa keeps it low; return
differences need longer runs. CheetahRun / HumanoidWalk not yet measured here.
Time: 500k env steps = 1M gradient steps, 2 seeds vmapped: an estimated 20-40 min on one GPU
(not yet measured; lower total_env_steps to fit a budget); days on a 2-core CPU.

``pendulum`` (measured 2026-11-27, 2-core CPU shared with other jobs; docs/reproductions/grama.md):
width 128, 3 seeds vmapped, 10k env steps = 18k gradient steps, 257-450 s per arm. Critic GraMa
ratio at the end (mean ± 95% Student-t interval over seeds) 0.081 ± 0.018 (vanilla) vs
0.032 ± 0.014 (ReDo) and 0.032 ± 0.019 (ReGraMa) (rerun of 2026-12-03),
up from 0.007 at the start; the ReDo dormant ratio did *not* stay near 0 (0.20 vanilla); all
arms reach an eval return of about -145 (Pendulum is solved, no return effect to see).
"""

from jaxlab.rl import sac

_ENVS = {
    "cheetah_run": "playground/CheetahRun",
    "humanoid_walk": "playground/HumanoidWalk",
    "pendulum": "gymnax/Pendulum-v1",
}
_METHODS = ("vanilla", "redo", "regrama")


def get_config(arg: str = "cheetah_run,regrama"):
  env, method = (arg.split(",") + [""])[:2]
  if env not in _ENVS or method not in _METHODS:
    raise ValueError(f"configs/grama/bro_sac.py:ENV,METHOD with ENV in {sorted(_ENVS)} and "
                     f"METHOD in {list(_METHODS)}; got {arg!r}")
  c = sac.default_config()
  c.env.name = _ENVS[env]
  c.env.episode_length = 1000
  c.env.impl = "jax"
  c.num_seeds = 2
  c.total_env_steps = 500_000
  c.num_envs = 8
  c.utd = 16  # replay ratio 2 per transition
  c.batch_size = 128
  c.learning_starts = 5000
  c.actor_lr = 1e-4
  c.critic_lr = 1e-3
  c.alpha_lr = 1e-4
  c.gamma = 0.99
  c.tau = 0.005
  c.replay.capacity = 1_000_000
  c.network.actor = "bronet"
  c.network.actor_depth = 1
  c.network.critic = "bronet"
  c.network.critic_depth = 2
  c.network.actor_width = 256
  c.network.critic_width = 256
  c.health.every = 1000
  c.reset.method = {"vanilla": "none", "redo": "redo", "regrama": "regrama"}[method]
  c.reset.every = 1000
  c.reset.tau = {"vanilla": None, "redo": 0.02, "regrama": 0.01}[method]
  if env == "humanoid_walk":
    c.reset.max_fraction = 0.05  # the "hybrid" cap used on Humanoid (spec §4.3 item 2)
  c.log_every = 250
  c.eval.every = 2500
  c.eval.num_envs = 8
  c.checkpoint.every = 5000
  if env == "pendulum":
    # CPU scale (docs/reproductions/grama.md): 3 seeds vmapped, width 128 instead of 256,
    # 200-step episodes, 4 envs x 8 gradient steps keeps replay ratio 2.
    c.env.episode_length = 200
    c.num_seeds = 3
    c.total_env_steps = 10_000
    c.num_envs = 4
    c.utd = 8
    c.learning_starts = 1000
    c.replay.capacity = 10_000
    c.network.actor_width = 128
    c.network.critic_width = 128
    c.health.every = 250
    c.log_every = 125
    c.eval.every = 250
    c.eval.num_envs = 16
    c.checkpoint.every = 0
  return c
