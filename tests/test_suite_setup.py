"""The suite's compilation setting (tests/conftest.py): unmarked tests compile with most of
XLA's optimisations off, in-process and in the subprocesses they start; tests marked
``optimized`` compile as a user's run does; ``JAXLAB_TEST_XLA_OPTIMIZATIONS=1`` optimises all."""

import os

import jax
import jax.numpy as jnp
import pytest

ALL_OPTIMISED = os.environ.get("JAXLAB_TEST_XLA_OPTIMIZATIONS", "") == "1"


def test_an_unmarked_test_compiles_unoptimised():
  expected = not ALL_OPTIMISED
  assert jax.config.read("jax_disable_most_optimizations") is expected
  assert os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] == ("1" if expected else "0")


@pytest.mark.optimized
def test_a_marked_test_compiles_optimised_with_fresh_caches():
  assert jax.config.read("jax_disable_most_optimizations") is False
  assert os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] == "0"


def _double(x):
  return 2 * x


def test_a_change_of_setting_drops_programs_compiled_under_the_other():
  f = jax.jit(_double)
  f(jnp.ones(3))
  assert f._cache_size() == 1  # pylint: disable=protected-access
  if ALL_OPTIMISED:
    return
  # what the conftest hook does before the next marked test
  item = type("Item", (), {"get_closest_marker": staticmethod(lambda name: object())})()
  import conftest  # pylint: disable=import-outside-toplevel
  assert conftest.__file__ == os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                           "conftest.py")
  conftest.pytest_runtest_setup(item)
  try:
    assert jax.config.read("jax_disable_most_optimizations") is False
    assert f._cache_size() == 0  # pylint: disable=protected-access
  finally:  # back to this test's own setting
    conftest.pytest_runtest_setup(type("Item", (), {
        "get_closest_marker": staticmethod(lambda name: None)})())
  assert jax.config.read("jax_disable_most_optimizations") is True
