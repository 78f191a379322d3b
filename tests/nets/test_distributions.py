"""Tests for jaxlab.nets.distributions: exact identities by enumeration and quadrature."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from jaxlab import nets


def test_categorical_normalisation_entropy_mode():
  logits = jax.random.normal(jax.random.key(0), (3, 5)) * 2.0
  dist = nets.Categorical(logits)
  actions = jnp.arange(5)
  logp = jax.vmap(dist.log_prob, out_axes=-1)(jnp.broadcast_to(actions[:, None], (5, 3)))
  chex.assert_shape(logp, (3, 5))
  np.testing.assert_allclose(jnp.exp(logp).sum(-1), 1.0, rtol=1e-6)
  p = np.exp(np.asarray(logp, np.float64))
  np.testing.assert_allclose(dist.entropy(), -(p * np.log(p)).sum(-1), rtol=1e-5)
  np.testing.assert_array_equal(dist.mode(), np.argmax(np.asarray(logits), -1))
  assert dist.mode().dtype == jnp.int32


def test_categorical_masked_actions():
  dist = nets.Categorical(jnp.array([0.0, -jnp.inf, 0.0, -jnp.inf]))
  np.testing.assert_allclose(dist.entropy(), math.log(2.0), rtol=1e-6)
  assert dist.log_prob(jnp.array(1)) == -jnp.inf
  samples = jax.vmap(dist.sample)(jax.random.split(jax.random.key(0), 200))
  assert set(np.unique(samples)) <= {0, 2}
  grad = jax.grad(lambda logits: nets.Categorical(logits).entropy())(dist.logits)
  np.testing.assert_array_equal(grad, 0.0)  # Finite (no nan); zero at the uniform maximum.
  grad = jax.grad(lambda logits: nets.Categorical(logits).entropy())(
    jnp.array([0.5, -jnp.inf, 0.0, -jnp.inf]))
  assert np.isfinite(grad).all() and grad[0] < 0 < grad[2]


def test_categorical_sample_frequencies_under_jit():
  probs = jnp.array([0.1, 0.2, 0.3, 0.4])
  dist = nets.Categorical(jnp.log(probs))
  n = 20000
  samples = jax.jit(jax.vmap(lambda d, k: d.sample(k), in_axes=(None, 0)))(
    dist, jax.random.split(jax.random.key(1), n))
  assert samples.dtype == jnp.int32
  freq = np.bincount(np.asarray(samples), minlength=4) / n
  # 5 standard errors of a binomial proportion: a correct sampler fails ~1e-6 of the time.
  np.testing.assert_allclose(freq, probs, atol=5 * math.sqrt(0.25 / n))


def test_normal_matches_scipy():
  loc = jnp.array([[0.3, -1.0], [2.0, 0.0]])
  scale = jnp.array([[0.5, 2.0], [1.0, 0.1]])
  x = jnp.array([[0.0, 1.0], [1.5, 0.05]])
  dist = nets.Normal(loc, scale)
  np.testing.assert_allclose(dist.log_prob(x),
                             stats.norm.logpdf(x, loc, scale).sum(-1), rtol=1e-5)
  np.testing.assert_allclose(dist.entropy(), stats.norm.entropy(loc, scale).sum(-1), rtol=1e-5)
  chex.assert_shape(dist.sample(jax.random.key(0)), (2, 2))


def test_tanh_log_det_jacobian_is_stable():
  x = np.linspace(-8.0, 8.0, 33)
  np.testing.assert_allclose(nets.tanh_log_det_jacobian(jnp.asarray(x, jnp.float32)),
                             np.log1p(-np.tanh(x) ** 2), rtol=1e-5, atol=1e-5)
  big = jnp.array([-40.0, 40.0])
  # log(1 - tanh^2) = log 4 - 2|x| + O(e^{-2|x|}); the naive float32 form gives -inf here.
  np.testing.assert_allclose(nets.tanh_log_det_jacobian(big), math.log(4.0) - 80.0, rtol=1e-6)
  with np.errstate(divide="ignore"):
    assert np.isneginf(np.log(1.0 - np.tanh(np.float32(40.0)) ** 2))


def test_tanh_normal_log_prob_is_change_of_variables():
  loc = jnp.array([[0.2, -0.5, 1.0]])
  scale = jnp.array([[0.7, 1.3, 0.4]])
  raw = jnp.array([[1.1, -2.5, 0.3]])
  dist = nets.TanhNormal(loc, scale)
  expect = (stats.norm.logpdf(raw, loc, scale) - np.log1p(-np.tanh(np.float64(raw)) ** 2)).sum(-1)
  chex.assert_shape(dist.log_prob(raw), (1,))
  np.testing.assert_allclose(dist.log_prob(raw), expect, rtol=1e-5)
  np.testing.assert_array_equal(dist.mode_raw(), loc)
  np.testing.assert_allclose(nets.TanhNormal.squash(raw), np.tanh(raw), rtol=1e-6)
  assert np.isfinite(dist.log_prob(jnp.array([[30.0, -30.0, 25.0]]))).all()


def _squashed_density_grid(loc, scale, n=200_000):
  """Midpoint grid on (-1, 1) and the TanhNormal density of the squashed action there."""
  a = (np.arange(n) + 0.5) / n * 2.0 - 1.0
  raw = jnp.asarray(np.arctanh(a), jnp.float32)[:, None]
  dist = nets.TanhNormal(jnp.full((1,), loc), jnp.full((1,), scale))
  return a, np.exp(np.asarray(dist.log_prob(raw), np.float64)), 2.0 / n


def test_tanh_normal_density_integrates_to_one():
  for loc, scale in [(0.0, 1.0), (0.7, 0.5), (-1.5, 2.0)]:
    _, p, da = _squashed_density_grid(loc, scale)
    np.testing.assert_allclose(p.sum() * da, 1.0, atol=2e-3, err_msg=f"{loc}, {scale}")


def test_tanh_normal_entropy_estimate_is_unbiased():
  loc, scale = 0.4, 0.8
  _, p, da = _squashed_density_grid(loc, scale)
  true_entropy = -np.sum(np.where(p > 0, p * np.log(np.maximum(p, 1e-300)), 0.0)) * da
  dist = nets.TanhNormal(jnp.array([[loc]]), jnp.array([[scale]]))
  n = 20000
  estimates = jax.jit(jax.vmap(dist.entropy))(jax.random.split(jax.random.key(0), n))
  chex.assert_shape(estimates, (n, 1))
  estimates = np.asarray(estimates, np.float64)
  stderr = estimates.std() / math.sqrt(n)
  assert abs(estimates.mean() - true_entropy) < 5 * stderr + 2e-3


def test_distributions_are_pytrees_for_vmap():
  dist = nets.TanhNormal(jnp.zeros((4, 2)), jnp.ones((4, 2)))
  raw = jax.vmap(lambda d, k: d.sample_raw(k))(dist, jax.random.split(jax.random.key(0), 4))
  chex.assert_shape(raw, (4, 2))
  logp = jax.vmap(lambda d, r: d.log_prob(r))(dist, raw)
  np.testing.assert_allclose(logp, dist.log_prob(raw), rtol=1e-6)
