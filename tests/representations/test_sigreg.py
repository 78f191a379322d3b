"""SIGReg (spec rl.md §1.3, §1.4): its value on Gaussian and non-Gaussian batches, its gradient."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlab import representations as rep
from jaxlab.representations import sigreg as sg

D = 64


def _gaussian(seed, batch, dim=D):
  return jax.random.normal(jax.random.key(seed), (batch, dim))


def test_rl_form_matches_spec_formula():
  """§1.4 step 5 written out with numpy: 16 unit directions, t = linspace(-5, 5, 8), no weights."""
  z = np.asarray(_gaussian(0, 32, 6)) * 1.3 + 0.2
  a = np.asarray(sg.random_directions(jax.random.key(1), 6, 16))
  np.testing.assert_allclose(np.linalg.norm(a, axis=0), 1.0, rtol=1e-6)
  t = np.linspace(-5.0, 5.0, 8)
  s = z @ a
  re = np.cos(s[..., None] * t).mean(0)
  im = np.sin(s[..., None] * t).mean(0)
  expected = np.mean((re - np.exp(-t ** 2 / 2)) ** 2 + im ** 2)
  out = sg.sigreg_statistic(jnp.asarray(z), jnp.asarray(a))
  np.testing.assert_allclose(out.loss, expected, rtol=1e-4)
  np.testing.assert_allclose(out.real + out.imag, out.loss, rtol=1e-6)
  # The key-based entry point draws exactly these directions.
  np.testing.assert_allclose(sg.sigreg_loss(jnp.asarray(z), jax.random.key(1)).loss, expected,
                             rtol=1e-4)


def test_lejepa_form_is_the_weighted_integral_times_n():
  """§1.3: B * sum_k w_k |phi_hat(t_k) - exp(-t_k^2/2)|^2 with folded trapezoid weights."""
  z = _gaussian(2, 50, 5) * 0.7
  a = sg.random_directions(jax.random.key(3), 5, 4)
  t, w = sg.t_grid("lejepa")
  assert t.shape == (17,) and float(t[-1]) == 3.0
  dt = 3.0 / 16
  np.testing.assert_allclose(w[0], dt)  # t = 0 counted once, every other knot twice
  np.testing.assert_allclose(w[5], 2 * dt * math.exp(-0.5 * float(t[5]) ** 2), rtol=1e-6)
  # The weights integrate the window: sum_k w_k ≈ ∫_{-3}^{3} e^{-t²/2} dt = sqrt(2π)·erf-part.
  np.testing.assert_allclose(float(jnp.sum(w)), math.sqrt(2 * math.pi) * math.erf(3 / math.sqrt(2)),
                             rtol=2e-3)
  s = np.asarray(z @ a)
  phi = np.exp(1j * s[..., None] * np.asarray(t)).mean(0)  # [M, K]
  expected = 50 * np.mean(np.sum(np.abs(phi - np.exp(-np.asarray(t) ** 2 / 2)) ** 2 * w, -1))
  np.testing.assert_allclose(sg.sigreg_statistic(z, a, form="lejepa").loss, expected, rtol=1e-4)


def test_gaussian_batches_sit_at_the_monte_carlo_floor():
  """N(0, I) batches: the statistic equals its sampling floor E[L] = mean_k (1 - e^{-t_k^2}) / B.

  At B = 4096 the floor is 2.07e-4; over 8 independent batches (fresh directions each) the mean
  is within 25% of it (the spread of one draw is about 8%, so 25% on a mean of 8 is > 8 sigma),
  and no single draw exceeds 1.5x the floor. Values that small mean "Gaussian" only relative to
  the non-Gaussian batches below, which are 10-1000x larger at a 4x smaller batch.
  """
  batch = 4096
  floor = sg.expected_gaussian_value(batch)
  np.testing.assert_allclose(floor, np.mean(1 - np.exp(-np.linspace(-5, 5, 8) ** 2)) / batch)
  values = np.array([sg.sigreg_loss(_gaussian(i, batch), jax.random.key(100 + i)).loss
                     for i in range(8)])
  assert abs(values.mean() / floor - 1.0) < 0.25, (values, floor)
  assert values.max() < 1.5 * floor, (values, floor)


@pytest.mark.parametrize("name,transform,factor", [
    ("collapsed", lambda z: jnp.broadcast_to(z[:1], z.shape), 1000.0),  # one point
    ("rank_one", lambda z: z[:, :1] * jnp.ones((1, D)) / math.sqrt(D), 50.0),
    ("anisotropic", lambda z: z * jnp.where(jnp.arange(D) < 8, 4.0, 1.0), 5.0),
    ("shifted", lambda z: z + 1.0, 10.0),
    ("shrunk", lambda z: 0.3 * z, 50.0),
])
def test_non_gaussian_batches_are_clearly_positive(name, transform, factor):
  batch = 1024
  floor = sg.expected_gaussian_value(batch)
  z = transform(_gaussian(7, batch))
  value = float(sg.sigreg_loss(z, jax.random.key(8)).loss)
  assert value > factor * floor, (name, value, floor)


def test_sees_non_gaussian_shape_in_low_dimension_only():
  """Centred, unit-variance uniform features: visible in 2-D, nearly invisible in 64-D.

  A sketch only tests 1-D projections; projecting many independent coordinates is close to
  Gaussian by the central limit theorem, so high-dimensional non-Gaussianity of this kind is
  (correctly) almost free. This documents the limit rather than hiding it.
  """
  batch = 1024
  floor = sg.expected_gaussian_value(batch)

  def uniform(dim):
    return jax.random.uniform(jax.random.key(0), (batch, dim), minval=-math.sqrt(3.0),
                              maxval=math.sqrt(3.0))

  low = float(sg.sigreg_loss(uniform(2), jax.random.key(1)).loss)
  high = float(sg.sigreg_loss(uniform(D), jax.random.key(1)).loss)
  assert low > 5 * floor, (low, floor)
  assert high < 2 * floor, (high, floor)


def test_gradient_descent_on_sigreg_alone_decollapses_a_batch():
  """Descending the statistic (fresh directions every step) spreads a rank-1 batch out."""
  batch, dim = 256, 16
  k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
  z0 = (jax.random.normal(k1, (batch, 1)) * jax.random.normal(k2, (1, dim))
        + 0.01 * jax.random.normal(k3, (batch, dim)))
  opt = optax.adam(0.02)

  @jax.jit
  def train(z):
    def step(carry, key):
      z, opt_state = carry
      loss, g = jax.value_and_grad(lambda z: sg.sigreg_loss(z, key).loss)(z)
      updates, opt_state = opt.update(g, opt_state)
      return (optax.apply_updates(z, updates), opt_state), loss
    keys = jax.random.split(jax.random.key(1), 400)
    (z, _), losses = jax.lax.scan(step, (z, opt.init(z)), keys)
    return z, losses

  z1, losses = train(z0)
  before, after = float(rep.effective_rank(z0)), float(rep.effective_rank(z1))
  assert before < 2.0, before
  assert after > 0.6 * dim, (before, after)  # 1.2 -> ~11.8 of 16 in 400 steps
  assert float(losses[-20:].mean()) < 0.2 * float(losses[:20].mean())


def test_no_gradient_into_the_directions():
  """Directions are a sketch, not parameters: their gradient is exactly zero, even when passed in
  as a differentiable argument; the gradient w.r.t. the features is the true one."""
  z = _gaussian(3, 64, 8) * 0.5 + 0.3
  a = sg.random_directions(jax.random.key(4), 8, 16)
  g_dir = jax.grad(lambda a: sg.sigreg_statistic(z, a).loss)(a)
  assert np.all(np.asarray(g_dir) == 0.0)
  # With the key fixed, the loss is a deterministic function of the features only: the same key
  # gives the same value, and its gradient matches a central finite difference along v.
  key = jax.random.key(5)
  f = lambda z: sg.sigreg_loss(z, key).loss
  assert float(f(z)) == float(f(z))
  assert float(f(z)) != float(sg.sigreg_loss(z, jax.random.key(6)).loss)
  v = jax.random.normal(jax.random.key(9), z.shape)
  z64, v64 = np.asarray(z, np.float64), np.asarray(v, np.float64)
  eps = 1e-2
  fd = (float(f(jnp.asarray(z64 + eps * v64))) - float(f(jnp.asarray(z64 - eps * v64)))) / (2 * eps)
  np.testing.assert_allclose(float(jnp.vdot(jax.grad(f)(z), v)), fd, rtol=2e-2)


def test_jit_vmap_and_leading_axes():
  """Leading axes are batch axes; vmapping over arms (e.g. seeds) equals separate calls."""
  z = _gaussian(1, 4 * 32, 8).reshape(4, 32, 8)
  key = jax.random.key(0)
  flat = sg.sigreg_loss(z.reshape(-1, 8), key).loss
  np.testing.assert_allclose(jax.jit(lambda z: sg.sigreg_loss(z, key).loss)(z), flat, rtol=1e-6)
  keys = jax.random.split(key, 4)
  batched = jax.vmap(lambda z, k: sg.sigreg_loss(z, k).loss)(z, keys)
  for i in range(4):
    np.testing.assert_allclose(batched[i], sg.sigreg_loss(z[i], keys[i]).loss, rtol=1e-5)


def test_bad_arguments_name_the_problem():
  with pytest.raises(ValueError, match="form='jepa'"):
    sg.sigreg_loss(jnp.zeros((4, 3)), jax.random.key(0), form="jepa")
  with pytest.raises(ValueError, match="num_slices"):
    sg.sigreg_loss(jnp.zeros((4, 3)), jax.random.key(0), num_slices=0)
  with pytest.raises(ValueError, match="D=3"):
    sg.sigreg_statistic(jnp.zeros((4, 3)), jnp.ones((5, 2)))
