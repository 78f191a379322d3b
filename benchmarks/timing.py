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
