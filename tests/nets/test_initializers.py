"""jaxlab.nets.initializers: same values as jax's, and vmapped inits that cannot deadlock."""

import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from jaxlab.nets import initializers

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_orthogonal_matches_jax_and_vmaps():
  ours, theirs = initializers.orthogonal(1.7), jax.nn.initializers.orthogonal(1.7)
  for key in (jax.random.PRNGKey(0), jax.random.key(0)):  # raw and typed keys
    np.testing.assert_array_equal(ours(key, (6, 4)), theirs(key, (6, 4)))
    keys = jax.random.split(key, 3)
    batched = jax.jit(jax.vmap(lambda k: ours(k, (3, 3, 2, 5))))(keys)
    for i in range(3):
      np.testing.assert_allclose(batched[i], theirs(keys[i], (3, 3, 2, 5)), rtol=1e-5,
                                 atol=1e-6)


def test_kernel_names():
  key = jax.random.key(3)
  np.testing.assert_array_equal(initializers.kernel("orthogonal", 0.5)(key, (8, 4)),
                                jax.nn.initializers.orthogonal(0.5)(key, (8, 4)))
  w = initializers.kernel("lecun_uniform", 123.0)(key, (300, 200))  # no gain: 123 is ignored
  np.testing.assert_array_equal(w, jax.nn.initializers.lecun_uniform()(key, (300, 200)))
  assert np.abs(w).max() <= np.sqrt(3 / 300)
  with pytest.raises(ValueError, match="'xavier' is not valid; expected one of orthogonal, "):
    initializers.kernel("xavier", 1.0)


# Several independent batched LAPACK calls at once (here: the QRs of twelve layers' orthogonal
# inits under vmap over two seeds, then Kron's triangular solves) used to hang for good on a
# 2-core machine (jaxlib's batched kernels wait on XLA's thread pool; see
# jaxlab/core/batching.py). With jax's own initialiser this init hung in 2 of 2 tries here. Run
# in a subprocess with a timeout, so a regression fails instead of hanging the suite.
VMAPPED_PROGRAMS = textwrap.dedent("""
    import jax, jax.numpy as jnp, optax
    from flax import nnx
    from jaxlab import nets, optim

    def init(key):
      mlp = nets.MLP(256, width=256, depth=12, rngs=nnx.Rngs(key))
      return nnx.split(mlp)[1]

    params = jax.jit(jax.vmap(init))(jax.random.split(jax.random.key(0), 2))
    tx = optim.kron(1e-3)

    def run(p):
      def step(carry, k):
        p, s = carry
        g = jax.tree.map(lambda x: jax.random.normal(k, x.shape), p)
        u, s = tx.update(g, s, p)
        return (optax.apply_updates(p, u), s), None
      return jax.lax.scan(step, (p, tx.init(p)), jax.random.split(jax.random.key(1), 3))[0][0]

    jax.block_until_ready(jax.jit(jax.vmap(run))(params))
    print("VMAPPED_OK")
""")


def test_vmapped_lapack_programs_finish():
  try:
    result = subprocess.run([sys.executable, "-c", VMAPPED_PROGRAMS], capture_output=True,
                            text=True, timeout=300, cwd=REPO)
  except subprocess.TimeoutExpired:
    pytest.fail("a vmapped init / Kron program hung (batched LAPACK starving XLA's CPU pool)")
  assert "VMAPPED_OK" in result.stdout, result.stderr[-3000:]
