"""PRNG helpers. Keys are raw uint32[2] arrays so that they checkpoint like any other array."""

from __future__ import annotations

import jax


def seed_key(seed: int) -> jax.Array:
  """The root key of a run: a function of the seed alone."""
  return jax.random.PRNGKey(seed)


def seed_keys(seed: int, num_seeds: int) -> jax.Array:
  """[num_seeds, 2] independent keys for ``jax.vmap(train)`` over seeds.

  Seed ``i`` of a multi-seed run is ``fold_in(seed_key(seed), i)``, so adding seeds never changes
  the existing ones.
  """
  root = seed_key(seed)
  return jax.vmap(lambda i: jax.random.fold_in(root, i))(jax.numpy.arange(num_seeds))
