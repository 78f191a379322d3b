"""jaxlab.core.batching.sequential: vmap's values, computed one element at a time."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.core import batching


def _qr_r(a):
  return jnp.linalg.qr(a)[1]


def test_vmapped_call_equals_vmap_and_runs_in_a_loop():
  a = jax.random.normal(jax.random.PRNGKey(0), (3, 5, 5))
  want = jax.vmap(_qr_r)(a)
  got = jax.jit(jax.vmap(batching.sequential(_qr_r)))(a)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(batching.sequential(_qr_r)(a[1]), _qr_r(a[1]))
  # The batched program maps unbatched QRs (a scan over the 3 elements); plain vmap does not.
  seq = str(jax.make_jaxpr(jax.vmap(batching.sequential(_qr_r)))(a))
  plain = str(jax.make_jaxpr(jax.vmap(_qr_r))(a))
  assert "scan" in seq and "scan" not in plain


def test_unbatched_arguments_pytrees_and_nested_vmaps():
  def fn(tree, scale):
    return {"sum": tree["x"] @ tree["y"] * scale, "n": tree["x"].shape[0]}

  x = jax.random.normal(jax.random.PRNGKey(1), (2, 3, 4, 4))
  y = jax.random.normal(jax.random.PRNGKey(2), (4, 4))  # shared by every element
  seq = jax.vmap(jax.vmap(batching.sequential(fn), in_axes=({"x": 0, "y": None}, None)),
                 in_axes=({"x": 0, "y": None}, None))
  got = jax.jit(seq)({"x": x, "y": y}, 2.0)
  want = jax.vmap(jax.vmap(fn, in_axes=({"x": 0, "y": None}, None)),
                  in_axes=({"x": 0, "y": None}, None))({"x": x, "y": y}, 2.0)
  # atol: a sum of four products can cancel to ~1e-2, where float32 rounding is ~1e-6 relative.
  np.testing.assert_allclose(got["sum"], want["sum"], rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(got["n"], np.full((2, 3), 4))


def test_typed_and_raw_keys():
  draw = lambda k: jax.random.normal(k, (3,))
  for keys in (jax.random.split(jax.random.PRNGKey(0), 4),
               jax.random.split(jax.random.key(0), 4)):
    np.testing.assert_array_equal(jax.jit(jax.vmap(batching.sequential(draw)))(keys),
                                  jax.vmap(draw)(keys))
