"""jaxlab SAC vs brax.training SAC: same env, schedule and networks, one process.

    python benchmarks/sac_vs_brax.py                                  # CheetahRun, 100k steps
    python benchmarks/sac_vs_brax.py --total_steps=300000 --num_evals=7 --out=runs/bench_sac.json
    python benchmarks/sac_vs_brax.py --only=ours --health_every=1000   # cost of health logging

Both trainers get MuJoCo Playground's tuned brax-SAC layout for DM Control
(``mujoco_playground.config.dm_control_suite_params.brax_sac_config``), scaled down by flags:
``num_envs`` envs stepped per iteration, then ``grad_updates_per_step`` gradient steps on
batches of ``batch_size`` (replay ratio grad_updates_per_step / num_envs per transition); one
learning rate for actor, critics and temperature; discount, Polyak rate, reward scaling and
observation normalisation the same; twin critics 256x256 with LayerNorm (brax's
``q_network_layer_norm=True``, jaxlab's ``network.critic="layernorm"``), actor 256x256 ReLU;
the same replay capacity. Warm-up differs in kind, not length: brax fills ``min_replay_size``
transitions with its initial policy, jaxlab takes uniform random actions for as many env
steps (``learning_starts``); neither takes gradient steps then. The losses differ in three
places that cost the same arithmetic (read in brax 0.14.2's ``sac/losses.py``, 2026-12-07):
brax's target entropy is -0.5 x action size (ours -action size, the SAC paper's), its
temperature loss is α·(-log π - H̄) (ours log α·(...), the same sign, a gradient smaller by α),
and it drops truncated transitions from the critic loss (ours bootstraps them from the state
reached). So the printed returns compare two SAC variants, not one SAC's two implementations.

Throughput (env-steps/s and grad-steps/s) is *training time only, compilation excluded*: for
jaxlab, the summed wall time of the compiled training chunks after the first one (which holds
the compilation; the warm-up iterations run before it in their own call); for brax, the
difference of its own ``training/walltime`` (epoch time, synchronised, evaluation excluded)
between the first and the last evaluation, over the env steps in between. Compile time is
printed beside it: the first chunk / first epoch minus the steady time per chunk. On a machine
shared with other jobs wall time depends on their load, so a second throughput is printed from
this process's CPU time (user + system) between the first and the last evaluation, evaluations
included for both. Evaluations use the same number of envs and deterministic actions for both;
the returns are printed at every evaluation.

``--health_every=N`` also times jaxlab with representation health (dormant / GraMa ratios,
gradient norms of actor and critic) logged every N gradient steps, as in configs/grama: one
extra training run of ours (same seed and steps) and a direct timing of the jitted health pass
against the jitted gradient step, and prints the overhead as a share of update time.

The last line is ``ratio=<ours/brax env-steps/s>``.

Measured (2026-11-27, 2-core CPU, jax 0.10.2, brax 0.14.2, load average 5-10 from other jobs;
``--total_steps=100000 --num_evals=5 --health_every=1000``, CheetahRun, 1 seed):

    ours  570 env-steps/s, 35.6 grad-steps/s, 797 env-steps per CPU-second, compile ~83 s
    brax  853 env-steps/s, 53.3 grad-steps/s, 1349 env-steps per CPU-second, compile ~70 s
    ratio=0.668 (by CPU time 0.591): ours is slower here, goal >= 1.5 not met
    eval return at 31k/54k/77k/100k env steps: ours 0.5/0.8/17.1/20.7, brax 0.5/0.3/0.2/0.1
    health every 1000 grad steps: pass 30.6 ms vs gradient step 18.1 ms -> 0.17% of update time
    (the end-to-end rerun with health printed +52% time: it overlapped a profiling job and
    other load, and ~5 health passes cannot cost that; the direct timing is the number)

Why ours was slower: the launcher then vmapped the trainer over the seed axis even for one
seed, and on XLA:CPU the vmapped SAC gradient step costs 1.7x the unvmapped one (17.8-18.4 vs
10.1-10.6 ms of CPU time, batch 512, LayerNorm critics; env step + replay write: 9.0 vs 5.3
ms), which is about the whole gap to brax. Without that axis (same settings, a later and less
loaded run of both, load average ~5):

    ours  1539 env-steps/s, 96.2 grad-steps/s, 1512 env-steps per CPU-second, compile ~44 s
    brax  1483 env-steps/s, 92.7 grad-steps/s, 1465 env-steps per CPU-second, compile ~37 s
    ratio=1.038 (by CPU time 1.032); eval return at 100k: ours 21.4, brax 0.1

The launcher (``jaxlab.core.chunked.over_seeds``) and this benchmark's default now run a single
seed without the vmap; ``--vmap_single_seed`` times the old path. On CPU both trainers spend
nearly all their time in the same gradient-step arithmetic, so parity, not 1.5x, is what the
CPU shows; the GPU comparison was not run (no device this task).

``--profile_step`` (on by default) shows why: it times ours' gradient steps alone (the chunk's
scan over pre-sampled batches) against XLA's FLOP count of one step and this machine's rate for
one [batch, hidden] x [hidden, hidden] matmul. Measured 2026-12-05 (quiet 2-core CPU, load
average 1.7 = this run's own two threads, default flags, both sides in one process):

    ours  1,703 env-steps/s, 106.4 grad-steps/s, compile ~38 s
    brax  1,678 env-steps/s, 104.9 grad-steps/s, compile ~31 s
    ratio=1.015 (by CPU time 1.016); eval return at 100k: ours 20.6, brax 0.1
    ours gradient step: 8.50 ms, 1.208 GFLOP (XLA) -> 142 GFLOP/s = 67% of the machine's
    [512,256]x[256,256] matmul rate (211 GFLOP/s)

An XLA profile of the step (jax.profiler, same settings) puts ~70% of its thread time in the
matmuls themselves (YNNPACK kernels at ~88% of the single-matmul rate; the weight-gradient
products x^T g run in Eigen at about half that rate) and the rest in ~300 small elementwise
kernels (Adam and Polyak per parameter leaf, bias + ReLU, LayerNorm). Running the twin critics
as one vmapped network compiled to the same program on XLA:CPU (same time, bit-identical
results), so it was not adopted. With 1.21 GFLOP per step that brax's step must also do (it
does slightly more: a separate actor pass for the temperature loss), 1.5x brax on this CPU
would need ours at 5.7 ms per step, i.e. at the matmul rate itself (212 GFLOP/s); that goal is
not reachable here without changing the algorithm's arithmetic.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

# brax 0.14.2's trainers call jax.device_put_replicated, which jax 0.10 removed from the public
# API. The private function still exists; restore it for brax only, here and nowhere else.
if not hasattr(jax, "device_put_replicated"):
  from jax._src import api as _jax_api  # pylint: disable=g-import-not-at-top
  jax.device_put_replicated = _jax_api.device_put_replicated

from benchmarks.timing import time_best  # pylint: disable=g-import-not-at-top
from jaxlab.core import chunked  # pylint: disable=g-import-not-at-top
from jaxlab.envs.from_config import make_from_config  # pylint: disable=g-import-not-at-top
from jaxlab.rl import replay as replay_lib  # pylint: disable=g-import-not-at-top
from jaxlab.rl import sac  # pylint: disable=g-import-not-at-top


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--env", default="CheetahRun", help="Playground DM Control env name")
  p.add_argument("--impl", default="jax", help="Playground physics implementation")
  p.add_argument("--total_steps", type=int, default=100_000)
  p.add_argument("--num_envs", type=int, default=128)
  p.add_argument("--batch_size", type=int, default=512)
  p.add_argument("--grad_updates_per_step", type=int, default=8)
  p.add_argument("--min_replay_size", type=int, default=8192)
  p.add_argument("--max_replay_size", type=int, default=1_048_576)
  p.add_argument("--learning_rate", type=float, default=1e-3)
  p.add_argument("--discounting", type=float, default=0.99)
  p.add_argument("--tau", type=float, default=0.005)
  p.add_argument("--reward_scaling", type=float, default=1.0)
  p.add_argument("--hidden", type=int, default=256, help="width of both hidden layers")
  p.add_argument("--episode_length", type=int, default=1000)
  p.add_argument("--num_evals", type=int, default=5, help="including the one at step 0")
  p.add_argument("--num_eval_envs", type=int, default=16)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--only", choices=["both", "ours", "brax"], default="both")
  p.add_argument("--health_every", type=int, default=0,
                 help="N > 0: also time ours with health metrics every N gradient steps")
  p.add_argument("--profile_step", type=int, default=1,
                 help="1: also time ours' gradient steps alone against this machine's matmul "
                      "rate (XLA's FLOP count of one step / step time / matmul FLOP/s)")
  p.add_argument("--vmap_single_seed", action="store_true",
                 help="run ours under jax.vmap over its single seed (the old launcher path)")
  p.add_argument("--out", default=None, help="write the results as JSON here")
  return p.parse_args(argv)


def schedule(args):
  """(warm-up iterations, iterations per evaluation interval, total env steps), as brax rounds.

  brax spends ceil(min_replay_size / num_envs) iterations on prefill, then splits the rest
  into num_evals - 1 epochs of equal whole iterations. jaxlab runs the same: the warm-up
  iterations in one compiled call, then num_evals - 1 chunks of the same length, so both are
  evaluated at the same env steps.
  """
  prefill = -(-args.min_replay_size // args.num_envs)
  per_epoch = -(-(args.total_steps - prefill * args.num_envs)
                // ((args.num_evals - 1) * args.num_envs))
  return prefill, per_epoch, (prefill + per_epoch * (args.num_evals - 1)) * args.num_envs


def ours_config(args, health_every=0):
  c = sac.default_config()
  c.env.name = f"playground/{args.env}"
  c.env.impl = args.impl
  c.env.episode_length = args.episode_length
  c.num_envs = args.num_envs
  c.utd = args.grad_updates_per_step
  c.batch_size = args.batch_size
  c.actor_lr = c.critic_lr = c.alpha_lr = args.learning_rate
  c.gamma = args.discounting
  c.tau = args.tau
  c.reward_scaling = args.reward_scaling
  c.normalize_observations = True
  c.replay.capacity = args.max_replay_size
  c.network.actor, c.network.critic = "mlp", "layernorm"
  c.network.actor_width = c.network.critic_width = args.hidden
  c.network.actor_depth = c.network.critic_depth = 2
  c.health.every = health_every
  prefill, chunk, total = schedule(args)
  c.learning_starts = prefill * args.num_envs
  c.log_every = chunk
  c.eval.every = chunk
  c.eval.num_envs = args.num_eval_envs
  c.checkpoint.every = 0
  c.total_env_steps = total
  c.seed = args.seed
  return c


def _over_seeds(fn, vmap: bool):
  """The launcher's way (``jaxlab.core.chunked.over_seeds``: one seed runs without a seed-axis
  vmap), or ``--vmap_single_seed``: ``jax.vmap`` over the size-1 axis, as the launcher did
  before 2026-11-27."""
  return jax.vmap(fn) if vmap else chunked.over_seeds(fn, 1)


def run_ours(args, health_every=0, env=None):
  """Trains ours as the launcher does (``--vmap_single_seed``: under a size-1 vmap)."""
  c = ours_config(args, health_every)
  env = env or make_from_config(c.env)
  trainer = sac.make_train(c, env)
  prefill = c.learning_starts // c.num_envs
  vmap = args.vmap_single_seed
  warmup = jax.jit(_over_seeds(lambda s: jax.lax.scan(
      lambda s, _: (trainer.update(s)[0], None), s, None, length=prefill)[0], vmap),
                   donate_argnums=0)
  chunk = jax.jit(_over_seeds(trainer.chunk, vmap), donate_argnums=0)
  evaluate = jax.jit(_over_seeds(trainer.evaluate, vmap))
  state = chunked.init_seeds(trainer, jax.random.PRNGKey(args.seed)[None])
  jax.block_until_ready(state)
  curve, chunk_s, cpu = [], [], []

  def record(update):
    key = jax.random.PRNGKey(10_000 + update)[None]
    ret = float(evaluate(state, key)["eval/episode_return"][0])
    curve.append((update * c.num_envs, ret))
    cpu.append(time.process_time())

  record(0)
  state = warmup(state)
  for i in range(1, args.num_evals):
    t = time.perf_counter()
    state, m = chunk(state)
    jax.block_until_ready(state)
    chunk_s.append(time.perf_counter() - t)
    record(prefill + i * c.log_every)
  steady = chunk_s[1:]
  iters = c.log_every * len(steady)
  return {"env_sps": iters * c.num_envs / sum(steady), "grad_sps": iters * c.utd / sum(steady),
          "cpu_env_sps": iters * c.num_envs / (cpu[-1] - cpu[1]),
          "compile_s": chunk_s[0] - np.mean(steady), "chunk_s": chunk_s, "curve": curve,
          "grad_steps": float(m["train/grad_steps"][0]), "trainer": trainer, "state": state}


def run_brax(args):
  import functools  # pylint: disable=g-import-not-at-top
  from brax.training.agents.sac import networks as brax_nets  # pylint: disable=g-import-not-at-top
  from brax.training.agents.sac import train as brax_sac  # pylint: disable=g-import-not-at-top
  from mujoco_playground import registry, wrapper  # pylint: disable=g-import-not-at-top

  env = registry.load(args.env, config_overrides={"impl": args.impl})
  points = []

  def progress(num_steps, metrics):
    points.append((int(num_steps), float(metrics["eval/episode_reward"]),
                   float(metrics.get("training/walltime", np.nan)), time.process_time()))

  factory = functools.partial(brax_nets.make_sac_networks,
                              hidden_layer_sizes=(args.hidden, args.hidden),
                              q_network_layer_norm=True)
  total = schedule(args)[2]
  brax_sac.train(
      environment=env, wrap_env_fn=wrapper.wrap_for_brax_training, num_timesteps=total,
      episode_length=args.episode_length, num_envs=args.num_envs,
      num_eval_envs=args.num_eval_envs, learning_rate=args.learning_rate,
      discounting=args.discounting, seed=args.seed, batch_size=args.batch_size,
      num_evals=args.num_evals, normalize_observations=True,
      reward_scaling=args.reward_scaling, tau=args.tau, min_replay_size=args.min_replay_size,
      max_replay_size=args.max_replay_size, grad_updates_per_step=args.grad_updates_per_step,
      deterministic_eval=True, network_factory=factory, progress_fn=progress)
  # points[0] is the evaluation before training (walltime NaN); points[1] follows prefill and
  # the first epoch (compilation); steady epochs are points[1] -> points[-1].
  (s1, _, w1, cpu1), (s2, _, w2, cpu2) = points[1], points[-1]
  _, per_epoch, _ = schedule(args)
  epochs = len(points) - 2
  steady_epoch_s = (w2 - w1) / epochs
  return {"env_sps": (s2 - s1) / (w2 - w1), "cpu_env_sps": (s2 - s1) / (cpu2 - cpu1),
          "grad_sps": epochs * per_epoch * args.grad_updates_per_step / (w2 - w1),
          "compile_s": w1 - steady_epoch_s, "curve": [(p[0], p[1]) for p in points]}


def health_cost(args, trainer, state, health_every):
  """Seconds of one jitted health pass and one jitted gradient step (one seed, unvmapped)."""
  s = jax.tree.map(lambda x: x[0], state)
  batch = replay_lib.sample(s.replay, jax.random.PRNGKey(1), args.batch_size)
  key = jax.random.PRNGKey(2)
  step = jax.jit(trainer._gradient_step)  # pylint: disable=protected-access
  health = jax.jit(trainer.health)

  def timed(fn, reps=50):
    jax.block_until_ready(fn())
    t = time.perf_counter()
    for _ in range(reps):
      out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - t) / reps

  t_step = timed(lambda: step(s.learner, s.obs_stats, batch, key))
  t_health = timed(lambda: health(s.learner, s.obs_stats, batch, key))
  return t_step, t_health, t_health / (health_every * t_step)


def step_profile(args, trainer, state):
  """Where ours' update time goes: its ``utd`` gradient steps alone, as the chunk runs them (a
  scan over pre-sampled batches), against the arithmetic they must do.

  Returns:
    {"step_ms": wall ms per gradient step (best of 5 scans), "gflop": XLA's FLOP count of one
    step / 1e9, "gflops": gflop / step time, "matmul_gflops": the best rate of one
    [batch, hidden] x [hidden, hidden] float32 matmul on this machine, "share": their ratio}.
  """
  s = jax.tree.map(lambda x: x[0], state)
  utd = args.grad_updates_per_step
  batches = jax.vmap(lambda k: replay_lib.sample(s.replay, k, args.batch_size))(
      jax.random.split(jax.random.PRNGKey(1), utd))
  keys = jax.random.split(jax.random.PRNGKey(2), utd)
  step = trainer._gradient_step  # pylint: disable=protected-access
  steps = jax.jit(lambda learner, stats, batches, keys: jax.lax.scan(
      lambda l, xs: step(l, stats, *xs), learner, (batches, keys)))
  one = jax.tree.map(lambda x: x[0], batches)
  cost = jax.jit(step).lower(s.learner, s.obs_stats, one, keys[0]).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flop = float(cost.get("flops", float("nan")))
  t_steps = time_best(lambda: jax.block_until_ready(steps(s.learner, s.obs_stats, batches, keys)),
                      5) / utd
  x = jnp.ones((args.batch_size, args.hidden), jnp.float32)
  w = jnp.ones((args.hidden, args.hidden), jnp.float32)
  matmul = jax.jit(jnp.matmul)
  t_mm = time_best(lambda: jax.block_until_ready(matmul(x, w)), 200)
  mm_gflops = 2 * args.batch_size * args.hidden ** 2 / t_mm / 1e9
  return {"step_ms": 1e3 * t_steps, "gflop": flop / 1e9, "gflops": flop / t_steps / 1e9,
          "matmul_gflops": mm_gflops, "share": flop / t_steps / 1e9 / mm_gflops}


def main(argv=None):
  args = parse_args(argv)
  prefill, per_epoch, total = schedule(args)
  print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}  jax {jax.__version__}")
  print(f"{args.env}: {total:,} env steps each, {args.num_envs} envs, batch {args.batch_size}, "
        f"{args.grad_updates_per_step} grad steps per iteration; {prefill} warm-up iterations, "
        f"then {args.num_evals - 1} intervals of {per_epoch} iterations", flush=True)
  results = {}
  for name, fn in (("ours", run_ours), ("brax", run_brax)):
    if args.only not in ("both", name):
      continue
    results[name] = fn(args)
    r = results[name]
    print(f"{name:4s}: {r['env_sps']:9,.0f} env-steps/s  {r['grad_sps']:8,.1f} grad-steps/s  "
          f"(training only; compile ~{r['compile_s']:.0f}s excluded)  "
          f"{r['cpu_env_sps']:9,.0f} env-steps per CPU-second (evaluations included)",
          flush=True)
    print(f"{name:4s} eval return by env step: "
          + "  ".join(f"{s}:{ret:.1f}" for s, ret in r["curve"]), flush=True)
  if args.health_every and "ours" in results:
    with_health = run_ours(args, args.health_every)
    e2e = results["ours"]["env_sps"] / with_health["env_sps"] - 1.0
    t_step, t_health, share = health_cost(args, with_health["trainer"], with_health["state"],
                                          args.health_every)
    print(f"ours with health every {args.health_every} grad steps: "
          f"{with_health['env_sps']:,.0f} env-steps/s (end to end {100 * e2e:+.1f}% time)")
    print(f"health pass {1e3 * t_health:.2f} ms, gradient step {1e3 * t_step:.2f} ms -> "
          f"health overhead {100 * share:.2f}% of update time", flush=True)
    results["health"] = {"every": args.health_every, "env_sps": with_health["env_sps"],
                         "end_to_end": e2e, "health_ms": 1e3 * t_health,
                         "step_ms": 1e3 * t_step, "share": share}
  if args.profile_step and "ours" in results:
    p = step_profile(args, results["ours"]["trainer"], results["ours"]["state"])
    print(f"ours gradient step: {p['step_ms']:.2f} ms, {p['gflop']:.3f} GFLOP (XLA) -> "
          f"{p['gflops']:.0f} GFLOP/s = {100 * p['share']:.0f}% of this machine's "
          f"[{args.batch_size},{args.hidden}]x[{args.hidden},{args.hidden}] matmul rate "
          f"({p['matmul_gflops']:.0f} GFLOP/s)", flush=True)
    results["ours"]["step_profile"] = p
  for r in results.values():
    r.pop("trainer", None)
    r.pop("state", None)
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
      json.dump({"args": vars(args), "results": results}, f, indent=1)
  if "ours" in results and "brax" in results:
    cpu_ratio = results["ours"]["cpu_env_sps"] / results["brax"]["cpu_env_sps"]
    print(f"ratio by CPU time (robust to other load on the machine)={cpu_ratio:.3f}")
    print(f"ratio={results['ours']['env_sps'] / results['brax']['env_sps']:.3f}")


if __name__ == "__main__":
  main()
