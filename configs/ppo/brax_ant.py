"""PPO on Brax ant (MJX pipeline), with brax's published ant hyperparameters.

    python -m launch.train --config=configs/ppo/brax_ant.py --workdir=runs/ant

4096 envs, 5-step unrolls, 32 minibatches of 2048 sequences, 4 epochs, lr 3e-4, discount 0.97,
reward scaling 10, observation normalisation; 50M env steps as in brax's ant example.
Expected: not yet run to completion here, so no return is claimed. Time: ant (MJX) steps at
~15k env-steps/s with 64 envs on the 2-core CPU, so 50M steps is a multi-day CPU run; on one
GPU expect tens of minutes (not measured here). The learner is jaxlab's default (advantages
recomputed once per epoch) with brax's normaliser timing (`obs_stats_timing="before"`), as in
configs/ppo/cheetah_run.py, whose docstring has the measurements behind it (at tuned_cpu's 16
epochs of 30-step unrolls, not this 4 of 5; not measured on ant). Brax's learner is a config
switch too (`--config.minibatch_unit=sequence --config.advantage_refresh=minibatch`).
"""

from jaxlab.rl import ppo


def get_config():
  c = ppo.default_config()
  c.env.name = "brax/ant"
  c.env.episode_length = 1000
  c.total_env_steps = 50_000_000
  c.num_envs = 4096
  c.unroll_length = 5
  c.unrolls_per_update = 16  # 32 x 2048 sequences / 4096 envs
  c.num_minibatches = 32
  c.num_epochs = 4
  c.learning_rate = 3e-4
  c.gamma = 0.97
  c.ent_coef = 1e-2
  c.reward_scaling = 10.0
  c.clip_eps = 0.3
  c.obs_stats_timing = "before"  # brax's; README (X), (Y), (Z)
  c.log_every = 10
  c.eval.every = 50
  c.eval.num_envs = 128
  c.checkpoint.every = 50
  return c
