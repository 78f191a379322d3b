"""Tests for jaxlab.nets.heads: shapes, initial scales, the Gaussian scale parameterisation."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxlab import nets


def _kernel(layer):
  return np.asarray(layer.kernel[...], np.float64)


def test_categorical_head():
  head = nets.CategoricalHead(6, 4, rngs=nnx.Rngs(0))
  logits = head(jnp.ones((2, 5, 6)))
  chex.assert_shape(logits, (2, 5, 4))
  w = _kernel(head.linear)
  np.testing.assert_allclose(w.T @ w, 0.01**2 * np.eye(4), atol=1e-9)  # Orthogonal, gain 0.01.
  np.testing.assert_array_equal(head.linear.bias[...], 0.0)
  # input_activation="relu" is the paper's "ReLU -> Linear" head: negative inputs give the bias.
  relu_head = nets.CategoricalHead(6, 4, input_activation="relu", rngs=nnx.Rngs(0))
  np.testing.assert_array_equal(relu_head(-jnp.ones((6,))), 0.0)


def test_value_head():
  head = nets.ValueHead(6, rngs=nnx.Rngs(0))
  chex.assert_shape(head(jnp.ones((2, 5, 6))), (2, 5))
  w = _kernel(head.linear)
  np.testing.assert_allclose(w.T @ w, [[1.0]], atol=1e-6)  # Gain 1.0.


@pytest.mark.parametrize("state_dependent_std", [True, False])
def test_gaussian_head_initial_scale_and_bounds(state_dependent_std):
  head = nets.GaussianHead(6, 3, state_dependent_std=state_dependent_std, init_scale=0.5,
                           rngs=nnx.Rngs(0))
  loc, scale = head(jnp.zeros((2, 5, 6)))
  chex.assert_shape([loc, scale], (2, 5, 3))
  np.testing.assert_allclose(scale, 0.5, rtol=1e-5)
  np.testing.assert_array_equal(loc, 0.0)
  # softplus(raw) + min_scale: tiny but positive for very negative raw values.
  if state_dependent_std:
    head.raw_scale.bias[...] = jnp.full((3,), -200.0)
  else:
    head.raw_scale[...] = jnp.full((3,), -200.0)
  _, scale = head(jnp.zeros((5, 6)))
  np.testing.assert_allclose(scale, 1e-3, rtol=1e-6)


@pytest.mark.parametrize("state_dependent_std", [True, False])
def test_gaussian_head_zero_raw_bias(state_dependent_std):
  """init_scale=None: brax's zero bias under the softplus, scale softplus(0) + min_scale."""
  head = nets.GaussianHead(6, 3, state_dependent_std=state_dependent_std, init_scale=None,
                           kernel_init="lecun_uniform", rngs=nnx.Rngs(0))
  raw = head.raw_scale.bias if state_dependent_std else head.raw_scale
  np.testing.assert_array_equal(raw[...], 0.0)
  _, scale = head(jnp.zeros((2, 6)))
  np.testing.assert_allclose(scale, np.log(2.0) + 1e-3, rtol=1e-6)


def test_gaussian_head_state_dependence():
  x = jax.random.normal(jax.random.key(0), (5, 6))
  _, dep = nets.GaussianHead(6, 2, rngs=nnx.Rngs(0))(x)
  _, ind = nets.GaussianHead(6, 2, state_dependent_std=False, rngs=nnx.Rngs(0))(x)
  assert float(jnp.std(dep, axis=0).max()) > 1e-5
  np.testing.assert_allclose(jnp.std(ind, axis=0), 0.0, atol=1e-7)
  assert "raw_scale" in nnx.state(nets.GaussianHead(6, 2, state_dependent_std=False,
                                                    rngs=nnx.Rngs(0)), nnx.Param)


def test_heads_feed_distributions_under_jit():
  head = nets.GaussianHead(6, 2, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(head)

  @jax.jit
  def logp(params, x, key):
    dist = nets.TanhNormal(*nnx.merge(graphdef, params)(x))
    return dist.log_prob(dist.sample_raw(key))

  chex.assert_shape(logp(params, jnp.ones((5, 6)), jax.random.key(1)), (5,))


def test_bad_head_arguments():
  with pytest.raises(ValueError, match="init_scale > min_scale > 0"):
    nets.GaussianHead(6, 2, init_scale=1e-4, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="activation='swish' is not valid"):
    nets.ValueHead(6, input_activation="swish", rngs=nnx.Rngs(0))
