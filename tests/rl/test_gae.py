"""GAE against a direct Python transcription of its definition."""

import jax.numpy as jnp
import numpy as np

from jaxlab.rl.gae import gae


def _reference(r, v, nv, term, done, gamma, lam):
  T, B = r.shape
  adv = np.zeros((T, B))
  for b in range(B):
    running = 0.0
    for t in reversed(range(T)):
      delta = r[t, b] + gamma * (1 - term[t, b]) * nv[t, b] - v[t, b]
      running = delta + gamma * lam * (1 - done[t, b]) * running
      adv[t, b] = running
  return adv


def test_gae_matches_reference_with_truncation_and_termination():
  rng = np.random.default_rng(0)
  T, B = 7, 5
  r, v, nv = (rng.normal(size=(T, B)) for _ in range(3))
  term = rng.random((T, B)) < 0.15
  trunc = (rng.random((T, B)) < 0.15) & ~term
  done = term | trunc
  adv, target = gae(jnp.asarray(r), jnp.asarray(v), jnp.asarray(nv), jnp.asarray(term),
                    jnp.asarray(done), 0.97, 0.9)
  ref = _reference(r, v, nv, term, done, 0.97, 0.9)
  np.testing.assert_allclose(adv, ref, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(target, ref + v, rtol=1e-5, atol=1e-5)


def test_truncation_bootstraps_but_termination_does_not():
  # One step, value of the reached state 10: truncated -> r + gamma*10, terminated -> r.
  r = jnp.ones((1, 2))
  v = jnp.zeros((1, 2))
  nv = jnp.full((1, 2), 10.0)
  term = jnp.asarray([[False, True]])
  done = jnp.asarray([[True, True]])
  adv, _ = gae(r, v, nv, term, done, 0.5, 0.95)
  np.testing.assert_allclose(adv, [[6.0, 1.0]])
