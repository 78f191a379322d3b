"""Timing helpers shared by the benchmarks (no flags, so any benchmark may import it)."""

from __future__ import annotations

import time
from typing import Any, Callable


def time_best(fn: Callable[[], Any], repeats: int) -> float:
  """The fastest of ``repeats`` timed calls of ``fn``, in seconds (``fn`` must block until its
  result is ready, e.g. end in ``jax.block_until_ready``)."""
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - t0)
  return best


def time_best_wall_and_cpu(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
  """``(wall s, CPU s)``, each the best of ``repeats`` calls of ``fn`` (which must block; call
  it once before, to compile). CPU time is the process's, over all threads, so it is less
  disturbed than wall time by other jobs on the machine."""
  cpu = []

  def timed():
    t0 = time.process_time()
    fn()
    cpu.append(time.process_time() - t0)

  return time_best(timed, repeats), min(cpu)


def random_unroll(env, num_envs: int, length: int):
  """``(env_state, key) -> env_state`` after ``length`` steps of ``num_envs`` envs (a
  ``jaxlab.envs.base.Env``) with uniform random actions, as one ``lax.scan``: the raw cost of
  stepping that a trainer's throughput is compared with."""
  import jax  # pylint: disable=import-outside-toplevel
  spec = env.spec

  def actions(key):
    if spec.discrete:
      return jax.random.randint(key, (num_envs,), 0, spec.action_size)
    return jax.random.uniform(key, (num_envs, spec.action_size), minval=spec.action_low,
                              maxval=spec.action_high)

  def step(carry, _):
    env_state, key = carry
    key, k_act = jax.random.split(key)
    return (jax.vmap(env.step)(env_state, actions(k_act)), key), None

  def unroll(env_state, key):
    (env_state, _), _ = jax.lax.scan(step, (env_state, key), None, length=length)
    return env_state

  return unroll
