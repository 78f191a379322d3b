"""Weight initialisers that stay safe under ``jax.vmap`` on small CPU machines.

``orthogonal`` draws the same values as ``jax.nn.initializers.orthogonal``; only its batching
differs. The orthogonal initialiser takes a QR decomposition, and a vmapped one (networks built
inside ``jax.vmap(trainer.init)`` over seeds, or re-initialised by a vmapped reset) becomes a
*batched* LAPACK call. jaxlib's batched LAPACK kernels split the batch over XLA's CPU thread
pool and block a pool thread until the pieces finish; XLA runs independent operations at once
(one QR per layer), so on a small pool (2 threads on 2 cores) every thread can end up waiting
for pieces that no free thread is left to run, and the program hangs for good. This was
reproduced with PQN / supervised inits over 2 seeds and a vmapped Kron update (triangular
solves); a stack dump shows both pool threads in ``jax::ParallelBatchMap`` waiting. Here a
vmapped call runs one unbatched QR per batch element in sequence instead (unbatched calls run
inline), so it cannot starve the pool; the cost is negligible (inits are one-off).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def orthogonal(scale: float = 1.0, column_axis: int = -1) -> jax.nn.initializers.Initializer:
  """``jax.nn.initializers.orthogonal(scale, column_axis)``, batched sequentially under vmap.

  Args:
    scale: gain multiplying the orthogonal matrix (sqrt(2) for ReLU layers, spec §2.2).
    column_axis: the axis whose columns are orthonormal (the output axis by default).

  Returns:
    ``init(key, shape, dtype=float32) -> array``, the same values as the jax initialiser.
  """
  base = jax.nn.initializers.orthogonal(scale, column_axis)

  def init(key: jax.Array, shape: Any, dtype: Any = jnp.float32, **kwargs) -> jax.Array:
    # Typed keys go through as raw key data: custom batching rules take plain arrays.
    typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    data = jax.random.key_data(key) if typed else key
    impl = jax.random.key_impl(key) if typed else None

    def one(k):
      k = jax.random.wrap_key_data(k, impl=impl) if typed else k
      return base(k, shape, dtype, **kwargs)

    return jax.custom_batching.sequential_vmap(one)(data)

  return init
