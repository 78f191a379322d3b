"""How XLA compiles the programs that come next: optimised (the default) or with most
optimisations off, for runs whose programs are tiny and whose time is nearly all compilation
(the test suite, the device scripts' smoke mode)."""

from __future__ import annotations

import jax


def set_unoptimised(unoptimised: bool) -> bool:
  """Turns jax's ``jax_disable_most_optimizations`` on or off; returns the previous setting.

  jax's in-memory caches do not key on that flag, so they are cleared when it changes: else a
  function compiled before would keep running its old program (seen: initial weights that
  differed in the last bits from the same draw in a fresh process). The persistent compilation
  cache keys on it and is left alone."""
  before = bool(jax.config.read("jax_disable_most_optimizations"))
  if before != unoptimised:
    jax.config.update("jax_disable_most_optimizations", unoptimised)
    jax.clear_caches()
  return before
