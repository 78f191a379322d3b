"""The suite's compilation setting (tests/conftest.py): unmarked tests compile with most of
XLA's optimisations off, in-process and in the subprocesses they start; tests marked
``optimized`` compile as a user's run does; ``JAXLAB_TEST_XLA_OPTIMIZATIONS=1`` optimises all."""

import os

import jax
import jax.numpy as jnp
import pytest

from jaxlab.core import compilation

ALL_OPTIMISED = os.environ.get("JAXLAB_TEST_XLA_OPTIMIZATIONS", "") == "1"


def test_an_unmarked_test_compiles_unoptimised():
  expected = not ALL_OPTIMISED
  assert jax.config.read("jax_disable_most_optimizations") is expected
  assert os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] == ("1" if expected else "0")


@pytest.mark.optimized
def test_a_marked_test_compiles_optimised():
  assert jax.config.read("jax_disable_most_optimizations") is False
  assert os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] == "0"


def _double(x):
  return 2 * x


def test_a_change_of_setting_drops_programs_compiled_under_the_other():
  f = jax.jit(_double)
  f(jnp.ones(3))
  assert f._cache_size() == 1  # pylint: disable=protected-access
  current = jax.config.read("jax_disable_most_optimizations")
  assert compilation.set_unoptimised(current) is current  # no change: programs kept
  assert f._cache_size() == 1  # pylint: disable=protected-access
  try:
    assert compilation.set_unoptimised(not current) is current
    assert jax.config.read("jax_disable_most_optimizations") is (not current)
    assert f._cache_size() == 0  # pylint: disable=protected-access
  finally:  # back to this test's own setting
    compilation.set_unoptimised(current)
  assert jax.config.read("jax_disable_most_optimizations") is current
