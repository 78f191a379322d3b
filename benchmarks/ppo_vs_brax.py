"""jaxlab PPO vs brax.training PPO: same env, num_envs, unroll and batch sizes, one process.

    python benchmarks/ppo_vs_brax.py                       # CartpoleBalance, 1M steps, 1 seed
    python benchmarks/ppo_vs_brax.py --seeds=3 --out=runs/bench_ppo.json
    python benchmarks/ppo_vs_brax.py --preset=tuned_cpu --seeds=5 --no-phases \
        --seed_csv=benchmarks/data/ppo_quality_tuned_cpu.csv   # learning quality
    python benchmarks/ppo_vs_brax.py --preset=tuned_cpu --seeds=10 --no-phases \
        --advantages=gae,lambda_td --seed_csv=runs/ppo_advantage.csv \
        --curves_csv=runs/ppo_advantage_curves.csv   # + ours with brax's advantage
    python benchmarks/ppo_vs_brax.py --preset=tuned_cpu --seeds=10 --no-phases --only=ours \
        --inits=orthogonal,lecun_uniform --seed_csv=runs/ppo_init.csv   # + brax's init
    python benchmarks/ppo_vs_brax.py --preset=tuned_cpu --seeds=10 --no-phases --only=ours \
        --recompute=off,on --seed_csv=runs/ppo_recompute.csv   # + brax's learner
    python benchmarks/ppo_vs_brax.py --preset=tuned_cpu --seeds=10 --no-phases --only=ours \
        --units=sequence --seed_csv=runs/ppo_sequences.csv   # + its minibatches alone
    python benchmarks/ppo_vs_brax.py --preset=tuned_cpu --seeds=10 --no-phases --only=ours \
        --obs_stats=before --seed_csv=runs/ppo_stats.csv   # + brax's normaliser timing
    python benchmarks/ppo_vs_brax.py --preset=tuned_cpu --seeds=10 --no-phases --only=ours \
        --recompute=epoch --seed_csv=runs/ppo_epoch.csv   # + advantages once per epoch
    python benchmarks/ppo_vs_brax.py --preset=tuned_cpu --seeds=10 --no-phases --only=ours \
        --recompute=epoch --units=sequence --seed_csv=runs/ppo_epoch_seq.csv   # on sequences

``--preset=tuned_cpu`` is Playground's tuned brax config for the DM Control suite scaled to
this CPU (``PRESETS``); with it, 5 seeds gave final returns ours 448 ± 69, brax 440 ± 140,
difference seed by seed +10 ± 170 (2026-12-05, shared 2-core CPU, ~5 min per run; README), and
10 seeds with the estimator arm (2026-12-07, quiet, 2.3-3.2 min per run): ours 435 ± 39, ours
with brax's advantage 394 ± 55, brax 477 ± 89; ours − brax −42 ± 113, estimator arm − ours
−41 ± 60, estimator arm − brax −83 ± 81 (README: verdicts and the curves); and 10 seeds of
ours with brax's initialisation (``--only=ours --inits=orthogonal,lecun_uniform``, 2026-12-07,
2.1-2.3 min per run): 351 ± 52, −84 ± 64 vs ours, −125 ± 89 vs brax; it starts where brax
starts (317 ± 37 untrained, brax 312 ± 23) but does not climb as brax does; and 10 seeds of
ours with brax's learner (``--only=ours --recompute=off,on``, 2026-12-07, 2.6-3.2 min per
run): 613 ± 138, +178 ± 146 vs ours, +136 ± 172 vs brax; it climbs (+225 ± 115 after the
first update, ours +38 ± 75, brax +165 ± 101), at 0.77x ours' env-steps/s; and 10 seeds of
ours with sequence minibatches alone (``--only=ours --units=transition,sequence``, 2026-12-07,
2.2-2.5 min per run): 408 ± 61, −27 ± 59 vs ours (no effect shown) and 205 ± 142 below brax's
learner, so the per-step recompute is the half that lifts ours; and 10 seeds of ours with
brax's normaliser timing (``--only=ours --obs_stats=before``, 2026-12-07, 2.2-2.4 min per run
on a quiet machine): 621 ± 65, +186 ± 92 vs ours, +144 ± 92 vs brax (ahead; at the
quickstart's schedule the same timing hurt, −308 ± 273: README); and 10 seeds of
ours with advantages recomputed once per epoch (``--only=ours --recompute=epoch``, 2026-12-07,
2.7-2.9 min per run): 965 ± 57, +530 ± 68 vs ours, +488 ± 105 vs brax (ahead), +352 ± 164
vs brax's learner, at 0.83x ours' env-steps/s; on two more tasks at the same schedule
(``--env=CartpoleSwingup --seeds=10`` and ``--env=WalkerStand --seeds=5``, 2026-12-07, README)
the epoch refresh − ours was +80 ± 39 (10 seeds) and +37 ± 19 (the 4 seeds that finished);
and 10 seeds of the epoch refresh on sequence minibatches (``--only=ours --recompute=epoch
--units=sequence``, 2026-12-07, 3.3-3.6 min per run): 911 ± 93, −54 ± 122 vs the epoch refresh
on transitions (no effect shown) and 298 ± 145 above brax's learner, so the refresh frequency,
not the minibatch's make-up, is what puts the epoch refresh ahead of brax's learner; and 10 seeds of
the epoch refresh with brax's normaliser timing on CartpoleSwingup (``--env=CartpoleSwingup
--only=ours --recompute=epoch --obs_stats=before``, 2026-12-08, ~3 min per run): 839 ± 26,
+561 ± 36 vs the epoch refresh alone (278 ± 32); and the same arm on CartpoleBalance (10 seeds,
~4.8 min per run beside the next) and WalkerStand (``--env=WalkerStand --seeds=4``, ~11.6 min
per run), 2026-12-08: 999.4 ± 0.5 and 269 ± 25, +35 ± 57 and −3 ± 43 vs the epoch refresh
alone (no effect shown on either), so configs/ppo/cheetah_run.py and brax_ant.py set it.

For each seed, both trainers run the same schedule: ``num_envs`` envs, ``unroll_length`` steps
per unroll, ``batch_size * num_minibatches`` sequences per update (brax's layout; jaxlab's
``unrolls_per_update`` is derived from it), ``num_epochs`` passes, the same learning rate,
entropy cost, discount, reward scaling, clipping and observation normalisation, and
``num_evals`` evaluations on ``num_eval_envs`` envs. Two differences of algorithm remain (README):
brax recomputes advantages with the current critic in every minibatch step, and its policy
advantage is the one-step TD error of its λ-return targets rather than GAE(λ) (the value
targets agree; tests/rl/test_gae.py checks both against brax's ``compute_gae``).
``--advantages=gae,lambda_td`` adds an arm of ours with brax's advantage
(``config.advantage_estimator="lambda_td"``), so the second difference can be ablated. A third
difference is the initialisation (ours: spec §2.2's orthogonal kernels, policy head gain 0.01,
scale from 1.0; brax: LeCun-uniform everywhere, zero biases, scale near 0.69);
``--inits=orthogonal,lecun_uniform`` adds an arm of ours with brax's
(``config.network.init="lecun_uniform"``). ``--recompute=off,on`` adds an arm of ours with
brax's learner (``config.advantage_refresh="minibatch"`` with
``config.minibatch_unit="sequence"``: minibatches of whole unroll sequences, advantages
recomputed from the current critic at every SGD step), the first difference;
``--recompute=epoch`` one with them recomputed over the whole batch at the start of every
epoch instead (``config.advantage_refresh="epoch"``), named ``_epoch``. Arm ``ours`` keeps
advantages once per update (``--recompute=off``, the default here), jaxlab's PPO default until
2026-12-07; the default is now the epoch refresh, arm ``ours_epoch``, which these studies made
the default (README). The arm names are kept so that the recorded rows read the same;
``ratio=`` (the last line) is arm ``ours``'s throughput over brax's, ``ratio ours_epoch=``
(and so on) each other arm's.
``--units=transition,sequence`` adds, for ``--recompute`` off and epoch, arms with brax's
minibatches of whole unroll sequences (``config.minibatch_unit="sequence"``), named
``_sequence``.
``--obs_stats=after,before`` adds an arm with brax's normaliser timing
(``config.obs_stats_timing="before"``: an update's unrolls enter the observation statistics
before its advantages and SGD steps, not after), named ``_stats_before``. Arms of ours run for
every (estimator, init, learner, timing) combination.

Throughput is measured the same way for both (brax's own ``training/sps`` is not used): env
steps between two consecutive evaluations divided by the wall time between them, after the
first interval (which holds compilation). Both intervals therefore include one evaluation.

Two more measurements put PPO's cost against the env's own (both compile-excluded, best of
``--repeats``; CPU time is ``time.process_time``, all threads, so less disturbed than wall time
by other jobs on the machine):

* raw stepping: the same env (``make_from_config`` with ours' ``config.env``, so the same
  wrappers) and batch, ``num_envs`` envs stepped with uniform random actions for
  ``unroll_length`` steps in one jitted ``lax.scan``: ``raw env-steps/s``, and each trainer's
  throughput as a fraction of it (``ppo/raw fraction``);
* ``--phases`` (default on; ``--no-phases`` skips it): one update of ours split into the
  trainer's own phase functions, each jitted alone: rollout (env steps + policy forward), GAE
  (value forwards + the recursion), update (epochs x minibatches of SGD) and the rest, in ms
  and as a share of their sum, next to the whole update compiled as one program.

Prints per-seed rows, means, raw stepping, the breakdown, ``ratio <arm>=`` for any arm of
ours other than ``ours``, and a last line ``ratio=<ours/brax env-steps/s>`` for arm ``ours``
(with ``--only=both``).

Measured 2026-12-05 (quiet 2-core CPU, load average 1.7 = this run's own threads, defaults):

    ours 23,077 env-steps/s, final return 999.0 (900 after 40.4 s); brax 18,173, 215.7
    raw env-steps/s 581,611; ppo/raw fraction=0.040, brax/raw fraction=0.031
    ours phases (ms of CPU per update): rollout 24.7 (3.9%), GAE 43.2 (6.8%),
      update 565.1 (88.9%), other 2.4; whole update 636.8; raw stepping of the same steps 20.6
    ratio=1.270

The learner is 96% of the time on this cheap env, and 89% is the SGD phase: 4 epochs x 8
minibatches of 1,024 samples through the policy (4 x 32) and value (5 x 256) networks, ~17.6
ms per minibatch step, of which ~12 ms is the minimum for its matmuls at the machine's measured
matmul rate; brax does the same arithmetic. Before this date's change to GAE (one value pass
over obs plus the last final_obs instead of two full passes, bit-identical results), GAE was
~89 ms of CPU per update and the whole update ~690 ms.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

# brax 0.14.2's trainers call jax.device_put_replicated, which jax 0.10 removed from the public
# API. The private function still exists; restore it for brax only, here and nowhere else.
if not hasattr(jax, "device_put_replicated"):
  from jax._src import api as _jax_api  # pylint: disable=g-import-not-at-top
  jax.device_put_replicated = _jax_api.device_put_replicated

# pylint: disable-next=g-import-not-at-top
from benchmarks.timing import random_unroll, time_best_wall_and_cpu
from jaxlab.core import stats  # pylint: disable=g-import-not-at-top
from jaxlab.envs.from_config import make_from_config  # pylint: disable=g-import-not-at-top
from jaxlab.rl import networks, ppo  # pylint: disable=g-import-not-at-top


# "tuned": Playground's tuned brax PPO config for the DM Control suite
# (mujoco_playground/config/dm_control_suite_params.py: 2048 envs, 30-step unrolls, 32
# minibatches of 1,024 sequences, 16 epochs, discount 0.995, reward scale 10, lr 1e-3, entropy
# 1e-2; brax's default clipping 0.3) for 6 updates, 5.9M steps, as the H200 run in the README.
# "tuned_cpu": the same with envs and minibatch size divided by 8 for a 2-core CPU. Each update
# still gathers 16 unrolls per env and runs 16 x 32 SGD steps; 737,280 steps are 6 updates.
# tests/test_ppo_vs_brax_args.py checks both against Playground's own config. An explicit flag
# overrides a preset value.
PRESETS = {
    "tuned": dict(num_envs=2048, unroll_length=30, batch_size=1024, num_minibatches=32,
                  num_epochs=16, learning_rate=1e-3, entropy_cost=1e-2, discounting=0.995,
                  reward_scaling=10.0, clipping_epsilon=0.3, total_steps=5_898_240,
                  num_evals=7, num_eval_envs=128),
    "tuned_cpu": dict(num_envs=256, unroll_length=30, batch_size=128, num_minibatches=32,
                      num_epochs=16, learning_rate=1e-3, entropy_cost=1e-2, discounting=0.995,
                      reward_scaling=10.0, clipping_epsilon=0.3, total_steps=737_280,
                      num_evals=7, num_eval_envs=128),
}


# --recompute's values: config.advantage_refresh of each ("on" is brax's learner).
RECOMPUTE = {"off": "update", "epoch": "epoch", "on": "minibatch"}

# The flags that choose ours' arms: (flag, default, choices, help). Each takes a comma-separated
# list of its choices; ours runs one arm per combination (learners() pairs --recompute and
# --units), named by ours_arm.
ARM_FLAGS = (
    ("advantages", "gae", ppo.ADVANTAGE_ESTIMATORS,
     "comma-separated advantage estimators of ours (config.advantage_estimator): 'gae' is arm "
     "'ours', 'lambda_td' (brax's) adds '_lambda_td'"),
    ("inits", "orthogonal", networks.INITS,
     "comma-separated network initialisers of ours (config.network.init: 'orthogonal', ours, or "
     "'lecun_uniform', brax's; adds '_lecun_uniform')"),
    ("recompute", "off", tuple(RECOMPUTE),
     "comma-separated 'off' (ours: advantages once per update), 'epoch' (recomputed at every "
     "epoch, config.advantage_refresh='epoch'; adds '_epoch') and/or 'on' (brax's learner, "
     "sequence minibatches, advantages recomputed at every SGD step; adds '_recompute')"),
    ("units", "transition", ppo.MINIBATCH_UNITS,
     "comma-separated minibatch units of ours' --recompute=off/epoch arms "
     "(config.minibatch_unit: 'transition', ours, or 'sequence', brax's; adds '_sequence')"),
    ("obs_stats", "after", ppo.OBS_STATS_TIMINGS,
     "comma-separated observation-statistics timings of ours (config.obs_stats_timing: "
     "'after' the SGD steps, ours, or 'before', brax's; adds '_stats_before')"),
)


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                 help="set the schedule and hyperparameters to a named preset (PRESETS)")
  p.add_argument("--env", default="CartpoleBalance", help="Playground DM Control env name")
  p.add_argument("--impl", default="jax", help="Playground physics implementation")
  p.add_argument("--total_steps", type=int, default=1_000_000)
  p.add_argument("--num_envs", type=int, default=256)
  p.add_argument("--unroll_length", type=int, default=32)
  p.add_argument("--batch_size", type=int, default=32, help="sequences per minibatch (brax)")
  p.add_argument("--num_minibatches", type=int, default=8)
  p.add_argument("--num_epochs", type=int, default=4, help="brax num_updates_per_batch")
  p.add_argument("--learning_rate", type=float, default=1e-3)
  p.add_argument("--entropy_cost", type=float, default=1e-2)
  p.add_argument("--discounting", type=float, default=0.995)
  p.add_argument("--reward_scaling", type=float, default=10.0)
  p.add_argument("--clipping_epsilon", type=float, default=0.3)
  p.add_argument("--episode_length", type=int, default=1000)
  p.add_argument("--num_evals", type=int, default=9)
  p.add_argument("--num_eval_envs", type=int, default=128)
  p.add_argument("--target", type=float, default=900.0)
  p.add_argument("--seeds", type=int, default=1)
  p.add_argument("--only", choices=["both", "ours", "brax"], default="both")
  for flag, default, _, text in ARM_FLAGS:
    p.add_argument(f"--{flag}", default=default, help=text)
  p.add_argument("--phases", action=argparse.BooleanOptionalAction, default=True,
                 help="print the per-phase breakdown of one update of ours")
  p.add_argument("--repeats", type=int, default=3,
                 help="timed calls per measurement of raw stepping and phases (best is kept)")
  p.add_argument("--out", default=None, help="write the results as JSON here")
  p.add_argument("--seed_csv", default=None,
                 help="write one row per (trainer, seed) as CSV here (arms ours / brax; "
                      "`python -m launch.analyze --data=FILE --paired=brax` tables it)")
  p.add_argument("--curves_csv", default=None,
                 help="write every evaluation of every (trainer, seed) as CSV here "
                      "(columns env_steps, eval_return, wall_s)")
  preset = p.parse_known_args(argv)[0].preset
  if preset:
    p.set_defaults(**PRESETS[preset])
  args = p.parse_args(argv)
  # Each arm flag becomes a list; a value outside its choices is one error line, exit 2.
  for flag, _, choices, _ in ARM_FLAGS:
    setattr(args, flag, getattr(args, flag).split(","))
    for value in getattr(args, flag):
      if value not in choices:
        p.error(f"--{flag}: {value!r} is not one of {list(choices)}")
  return args


def learners(args):
  """The (minibatch unit, advantage refresh) learners of ours that ``--units`` and
  ``--recompute`` ask for: each unit with ``off`` and ``epoch``, and brax's (``on``)."""
  return [(unit, RECOMPUTE[r]) for r in args.recompute
          for unit in (("sequence",) if r == "on" else args.units)]


def ours_arm(estimator, init="orthogonal", refresh="update", unit="transition",
             timing="after"):
  """Arm name of ours with this advantage estimator, initialiser, learner and normaliser
  timing: ``ours`` (GAE, orthogonal, shuffled transitions, advantages once per update,
  statistics after), plus ``_<estimator>`` for another estimator, ``_<init>`` for another
  initialiser, ``_recompute`` for brax's learner (sequences, per-step advantages), ``_epoch``
  for advantages once per epoch, ``_sequence`` for sequence minibatches otherwise and
  ``_stats_before`` for brax's timing."""
  learner = ("_recompute" if refresh == "minibatch" else
             ("_epoch" if refresh == "epoch" else "") + ("_sequence" if unit == "sequence" else ""))
  return ("ours" + ("" if estimator == "gae" else f"_{estimator}")
          + ("" if init == "orthogonal" else f"_{init}") + learner
          + ("" if timing == "after" else f"_stats_{timing}"))


SEED_COLUMNS = ("final_return", "sps", "wall_s")


def _arm_runs(rows):
  """``(key columns, result)`` of every (arm, seed) in ``rows``, arm by arm in first-seen
  order: arm (``ours_arm``'s names, or ``brax``), run ``<arm>_s<seed>``, seed."""
  arms = list(dict.fromkeys(k for r in rows for k in r if k != "seed"))
  return [({"arm": name, "run": f"{name}_s{r['seed']}", "seed": r["seed"]}, r[name])
          for name in arms for r in rows if name in r]


def seed_rows(rows):
  """Per-seed CSV rows (``stats.write_seed_rows``): the final evaluation return, env-steps/s
  and wall time of every (arm, seed)."""
  return [{**key, **{k: result[k] for k in SEED_COLUMNS}} for key, result in _arm_runs(rows)]


CURVE_COLUMNS = ("env_steps", "eval_return", "wall_s")


def curve_rows(rows):
  """Per-evaluation CSV rows (``stats.write_seed_rows``), one per (arm, seed, evaluation): env
  steps, the evaluation return and the wall time at it."""
  return [{**key, "env_steps": steps, "eval_return": ret, "wall_s": wall}
          for key, result in _arm_runs(rows) for wall, steps, ret in result["curve"]]


def _throughput(points):
  """points: [(wall_s, env_steps, return)] at each evaluation -> steady env-steps/s."""
  if len(points) < 3:
    return float("nan")
  (t1, s1, _), (t2, s2, _) = points[1], points[-1]
  return (s2 - s1) / (t2 - t1)


def _time_to_target(points, target):
  for t, s, r in points:
    if r >= target:
      return t, s
  return float("nan"), float("nan")


def ours_config(args, seed, estimator="gae", init="orthogonal", refresh="update",
                unit="transition", timing="after"):
  """jaxlab's PPO config for brax's schedule; total steps rounded to whole evaluations.
  ``refresh="minibatch"`` (brax's learner) implies sequence minibatches."""
  c = ppo.default_config()
  c.advantage_estimator = estimator
  c.network.init = init
  c.advantage_refresh = refresh
  c.minibatch_unit = "sequence" if refresh == "minibatch" else unit
  c.obs_stats_timing = timing
  c.env.name = f"playground/{args.env}"
  c.env.impl = args.impl
  c.env.episode_length = args.episode_length
  c.num_envs = args.num_envs
  c.unroll_length = args.unroll_length
  sequences = args.batch_size * args.num_minibatches
  if sequences % args.num_envs:
    raise SystemExit("batch_size * num_minibatches must be a multiple of num_envs (brax's rule)")
  c.unrolls_per_update = sequences // args.num_envs
  c.num_minibatches = args.num_minibatches
  c.num_epochs = args.num_epochs
  c.learning_rate = args.learning_rate
  c.ent_coef = args.entropy_cost
  c.gamma = args.discounting
  c.reward_scaling = args.reward_scaling
  c.clip_eps = args.clipping_epsilon
  c.normalize_observations = True
  c.eval.num_envs = args.num_eval_envs
  # Evaluate at the same env-step marks as brax: num_evals - 1 equal training epochs.
  steps_per_update = ppo.steps_per_update(c)
  updates_per_eval = max(args.total_steps // steps_per_update // (args.num_evals - 1), 1)
  c.log_every = updates_per_eval
  c.eval.every = updates_per_eval
  c.checkpoint.every = 0  # the benchmark calls the trainer directly; no checkpoints
  c.total_env_steps = updates_per_eval * (args.num_evals - 1) * steps_per_update
  c.seed = seed
  return c, updates_per_eval


def run_ours(args, seed, estimator="gae", init="orthogonal", refresh="update",
             unit="transition", timing="after"):
  c, updates_per_eval = ours_config(args, seed, estimator, init, refresh, unit, timing)
  steps_per_update = ppo.steps_per_update(c)
  env = make_from_config(c.env)
  trainer = ppo.make_train(c, env)
  chunk = jax.jit(trainer.chunk, donate_argnums=0)
  evaluate = jax.jit(trainer.evaluate)
  t0 = time.perf_counter()
  state = jax.jit(trainer.init)(jax.random.PRNGKey(seed))
  points = []

  def record(update):
    ret = float(evaluate(state, jax.random.PRNGKey(10_000 + update))["eval/episode_return"])
    points.append((time.perf_counter() - t0, update * steps_per_update, ret))

  record(0)
  for i in range(1, args.num_evals):
    state, _ = chunk(state)
    record(i * updates_per_eval)
  return points


def raw_stepping(args):
  """Raw env stepping of ours' env and batch: ``{"sps", "cpu_sps", "unroll_ms",
  "unroll_cpu_ms"}`` for one unroll of ``unroll_length`` steps of ``num_envs`` envs."""
  c, _ = ours_config(args, 0)
  env = make_from_config(c.env)
  env_state = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.PRNGKey(0), c.num_envs))
  unroll = jax.jit(random_unroll(env, c.num_envs, c.unroll_length))
  key = jax.random.PRNGKey(1)
  jax.block_until_ready(unroll(env_state, key))  # compile
  wall, cpu = time_best_wall_and_cpu(lambda: jax.block_until_ready(unroll(env_state, key)),
                                     args.repeats)
  steps = c.num_envs * c.unroll_length * c.env.action_repeat
  return {"sps": steps / wall, "cpu_sps": steps / cpu, "unroll_ms": 1e3 * wall,
          "unroll_cpu_ms": 1e3 * cpu}


def phase_breakdown(args):
  """One update of ours, phase by phase: ``{phase: {"ms", "cpu_ms"}}`` for rollout, gae,
  update, other (batch statistics and metrics) and, for comparison, "full" (``trainer.update``
  compiled whole). Each phase is the trainer's own method, jitted alone, on the state the
  previous phase returns, from ``init``: freshly reset envs, so with episodes longer than an
  unroll the unroll ends none, the common case (GAE of an unroll that ends an episode costs
  one more value pass over the batch)."""
  c, _ = ours_config(args, 0)
  trainer = ppo.make_train(c, make_from_config(c.env))
  state = jax.jit(trainer.init)(jax.random.PRNGKey(0))
  collect = jax.jit(trainer.collect)
  advantages = jax.jit(trainer.advantages)
  learn = jax.jit(lambda state, traj, adv, targets, values: trainer.learn(
      state, trainer.batch(traj, adv, targets, values)))
  finish = jax.jit(trainer.finish)
  update = jax.jit(trainer.update)
  # Run each once (compile) to get the next phase's inputs.
  rolled, traj = jax.block_until_ready(collect(state))
  adv, targets, values = jax.block_until_ready(advantages(rolled, traj))
  learned, metrics = jax.block_until_ready(learn(rolled, traj, adv, targets, values))
  jax.block_until_ready(finish(learned, traj, dict(metrics)))
  jax.block_until_ready(update(state))
  calls = {
      "rollout": lambda: collect(state),
      "gae": lambda: advantages(rolled, traj),
      "update": lambda: learn(rolled, traj, adv, targets, values),
      "other": lambda: finish(learned, traj, dict(metrics)),
      "full": lambda: update(state),
  }
  out = {}
  for name, call in calls.items():
    wall, cpu = time_best_wall_and_cpu(lambda call=call: jax.block_until_ready(call()),
                                       args.repeats)
    out[name] = {"ms": 1e3 * wall, "cpu_ms": 1e3 * cpu}
  return out


def _print_phases(phases, raw, unrolls_per_update):
  parts = ("rollout", "gae", "update", "other")
  total_cpu = sum(phases[p]["cpu_ms"] for p in parts)
  total = sum(phases[p]["ms"] for p in parts)
  print("ours phases of one update (jitted alone; share of CPU time):")
  for p in parts:
    print(f"  {p:8s} {phases[p]['cpu_ms']:9.1f} ms cpu  {phases[p]['ms']:9.1f} ms wall  "
          f"{phases[p]['cpu_ms'] / total_cpu:6.1%}")
  print(f"  {'sum':8s} {total_cpu:9.1f} ms cpu  {total:9.1f} ms wall")
  print(f"  {'full':8s} {phases['full']['cpu_ms']:9.1f} ms cpu  {phases['full']['ms']:9.1f} ms wall"
        "  (trainer.update as one program)")
  if raw is not None:
    env_cpu = raw["unroll_cpu_ms"] * unrolls_per_update
    print(f"  raw env stepping of the same env steps: {env_cpu:.1f} ms cpu = "
          f"{env_cpu / phases['full']['cpu_ms']:.1%} of the full update")


def run_brax(args, seed):
  from brax.training.agents.ppo import train as brax_ppo  # pylint: disable=g-import-not-at-top
  from mujoco_playground import registry, wrapper  # pylint: disable=g-import-not-at-top

  env = registry.load(args.env, config_overrides={"impl": args.impl})
  points = []
  t0 = time.perf_counter()

  def progress(num_steps, metrics):
    points.append((time.perf_counter() - t0, int(num_steps),
                   float(metrics["eval/episode_reward"])))

  brax_ppo.train(
      environment=env, wrap_env_fn=wrapper.wrap_for_brax_training,
      num_timesteps=args.total_steps, num_evals=args.num_evals, num_envs=args.num_envs,
      episode_length=args.episode_length, unroll_length=args.unroll_length,
      batch_size=args.batch_size, num_minibatches=args.num_minibatches,
      num_updates_per_batch=args.num_epochs, learning_rate=args.learning_rate,
      entropy_cost=args.entropy_cost, discounting=args.discounting,
      reward_scaling=args.reward_scaling, clipping_epsilon=args.clipping_epsilon,
      normalize_observations=True, num_eval_envs=args.num_eval_envs,
      deterministic_eval=True, seed=seed, progress_fn=progress)
  return points


def main(argv=None):
  args = parse_args(argv)
  # brax rounds its schedule up to whole training steps per evaluation: give both the same
  # number of env steps by rounding first.
  args.total_steps = ours_config(args, 0)[0].total_env_steps
  print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}  jax {jax.__version__}")
  # (arm name, function of (args, seed)) of every arm --only keeps, in the order they run.
  arms = ([(ours_arm(e, i, r, u, t), functools.partial(run_ours, estimator=e, init=i,
                                                       refresh=r, unit=u, timing=t))
           for e in args.advantages for i in args.inits for u, r in learners(args)
           for t in args.obs_stats]
          if args.only in ("both", "ours") else [])
  arms += [("brax", run_brax)] if args.only in ("both", "brax") else []
  rows = []
  for seed in range(args.seeds):
    row = {"seed": seed}
    for name, fn in arms:
      points = fn(args, seed)
      t_target, s_target = _time_to_target(points, args.target)
      row[name] = {"sps": _throughput(points), "final_return": points[-1][2],
                   "wall_s": points[-1][0], "env_steps": points[-1][1],
                   "time_to_target_s": t_target, "steps_to_target": s_target,
                   "curve": points}
      print(f"seed {seed} {name:4s}: {row[name]['sps']:10,.0f} env-steps/s  final return "
            f"{row[name]['final_return']:7.1f}  wall {row[name]['wall_s']:6.1f}s  "
            f"to {args.target:g}: {t_target:6.1f}s", flush=True)
    rows.append(row)
    # After every seed, so an interrupted study keeps the seeds it finished.
    for path, table, columns in ((args.seed_csv, seed_rows, SEED_COLUMNS),
                                 (args.curves_csv, curve_rows, CURVE_COLUMNS)):
      if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        stats.write_seed_rows(path, table(rows), columns)
  summary = {}
  for name, _ in arms:
    runs = [r[name] for r in rows if name in r]
    if runs:
      summary[name] = {k: float(np.mean([r[k] for r in runs]))
                       for k in ("sps", "final_return", "wall_s", "time_to_target_s")}
      summary[name]["final_returns"] = [r["final_return"] for r in runs]
      print(f"mean {name:4s}: {summary[name]['sps']:10,.0f} env-steps/s  final return "
            f"{summary[name]['final_return']:7.1f} (per seed {summary[name]['final_returns']})  "
            f"time to target {summary[name]['time_to_target_s']:.1f}s")
  raw = phases = None
  if summary:
    raw = raw_stepping(args)
    print(f"raw env-steps/s: {raw['sps']:10,.0f} (wall), {raw['cpu_sps']:10,.0f} per CPU-second  "
          f"({args.num_envs} envs x {args.unroll_length} steps, random actions, best of "
          f"{args.repeats})")
    for name in summary:  # ours: "ppo/raw fraction=", brax: "brax/raw fraction="
      label = "ppo" + name[len("ours"):] if name.startswith("ours") else name
      print(f"{label}/raw fraction={summary[name]['sps'] / raw['sps']:.3f}")
  if args.phases and "ours" in summary:
    phases = phase_breakdown(args)
    _print_phases(phases, raw, ours_config(args, 0)[0].unrolls_per_update)
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
      json.dump({"args": vars(args), "rows": rows, "summary": summary, "raw": raw,
                 "phases": phases}, f, indent=1)
  names = list(summary)
  for i, a in enumerate(names):
    for b in names[i + 1:]:
      diffs = [r[a]["final_return"] - r[b]["final_return"] for r in rows]
      print(f"final return {a} - {b}, seed by seed: "
            f"{stats.format_ci(*stats.mean_ci(diffs))} (mean ± 95% t-interval, {len(diffs)} seeds)")
  if "brax" in summary:  # "ratio <arm>=" for each other arm of ours, then arm ours' ratio= last
    for name in sorted((n for n in summary if n.startswith("ours")), key=lambda n: n == "ours"):
      label = "ratio" if name == "ours" else f"ratio {name}"
      print(f"{label}={summary[name]['sps'] / summary['brax']['sps']:.3f}")


if __name__ == "__main__":
  main()
