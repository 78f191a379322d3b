"""jaxlab.core.running_stats against numpy on the concatenated stream."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.core import running_stats


def _stream(seed, sizes, shape, loc=0.0, scale=1.0):
  rng = np.random.default_rng(seed)
  scales = rng.uniform(0.5, 2.0, shape) * scale
  return [(loc + scales * rng.normal(size=(n,) + shape)).astype(np.float32) for n in sizes]


@pytest.mark.parametrize('sizes', [[7], [1, 1, 1, 5], [64, 3, 129, 1, 32]])
def test_chunked_updates_match_numpy(sizes):
  chunks = _stream(0, sizes, (3,))
  stats = running_stats.init(3)
  for chunk in chunks:
    stats = running_stats.update(stats, jnp.asarray(chunk))
  everything = np.concatenate(chunks).astype(np.float64)
  np.testing.assert_allclose(stats.mean, everything.mean(0), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(stats.var, everything.var(0), rtol=1e-5)
  assert float(stats.count) == sum(sizes)
  chex.assert_type([stats.mean, stats.var, stats.count], jnp.float32)


def test_several_batch_axes_and_sample_axes():
  """Batches of [T, N, *S] (a rollout) count T*N samples of shape S."""
  rng = np.random.default_rng(1)
  a = rng.normal(size=(4, 5, 2, 3)).astype(np.float32)
  b = 3.0 + rng.normal(size=(6, 2, 3)).astype(np.float32)
  stats = running_stats.update(running_stats.update(running_stats.init((2, 3)), a), b)
  everything = np.concatenate([a.reshape(-1, 2, 3), b]).astype(np.float64)
  np.testing.assert_allclose(stats.mean, everything.mean(0), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(stats.var, everything.var(0), rtol=1e-5)
  assert float(stats.count) == 26


def test_large_offset_keeps_precision():
  """|mean| = 1e4 with std ~1: a naive E[x^2]-E[x]^2 in float32 loses the variance entirely."""
  chunks = _stream(2, [256] * 8, (4,), loc=1e4)
  stats = running_stats.init(4)
  for chunk in chunks:
    stats = running_stats.update(stats, jnp.asarray(chunk))
  everything = np.concatenate(chunks).astype(np.float64)
  np.testing.assert_allclose(stats.var, everything.var(0), rtol=1e-3)


def test_update_is_jittable_and_normalize_standardises():
  chunks = _stream(3, [100, 50], (2,), loc=5.0, scale=3.0)
  update = jax.jit(running_stats.update)
  stats = running_stats.init(2)
  for chunk in chunks:
    stats = update(stats, jnp.asarray(chunk))
  everything = np.concatenate(chunks)
  z = np.asarray(running_stats.normalize(stats, jnp.asarray(everything), clip=None))
  np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-4)
  np.testing.assert_allclose(z.std(0), 1.0, rtol=1e-4)
  clipped = running_stats.normalize(stats, jnp.asarray(everything) * 100.0, clip=5.0)
  assert float(jnp.max(jnp.abs(clipped))) == 5.0


def test_init_normalize_is_identity_and_shape_is_checked():
  x = jnp.array([[0.5, -2.0]])
  np.testing.assert_allclose(running_stats.normalize(running_stats.init(2), x), x, rtol=1e-6)
  with pytest.raises(ValueError, match='does not end with the sample shape'):
    running_stats.update(running_stats.init(3), jnp.zeros((4, 2)))
