"""SAC on MuJoCo Playground CheetahRun (DM Control suite in MJX), many parallel envs.

    python -m launch.train --config=configs/sac/cheetah_run.py --workdir=runs/sac_cheetah

Layout after MuJoCo Playground's brax-SAC settings for DM Control: 128 envs, 8 gradient steps
of batch 512 per iteration (replay ratio 1/16 per transition), lr 1e-3, observation
normalisation, 8192 warm-up steps, 1M-transition replay (0.18 GB per seed).
Expected: a rising eval return (CheetahRun's maximum is 1000); a full run not yet measured here.
Measured (2026-11-27, 2-core CPU shared with other jobs, 1 seed, benchmarks/sac_vs_brax.py with
this layout and LayerNorm critics): deterministic eval return 0.5 / 0.8 / 17.1 / 20.7 at
31k / 54k / 77k / 100k env steps (brax.training SAC, same settings: 0.5 / 0.3 / 0.2 / 0.1);
570 env-steps/s = 36 gradient steps/s of batch 512 through the launcher's vmap over seeds, 83 s
compilation; 1539 env-steps/s = 96 gradient steps/s without the seed axis (brax: 1483),
which is how the launcher now runs a single seed (jaxlab.core.loop.over_seeds).
Time: on a 2-core CPU this is hours (100k steps took ~5 min with compilation and evaluations);
on one GPU an estimated 10-20 minutes for the 2M steps (not yet measured).
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
