"""Weight initialisers that stay safe under ``jax.vmap`` on small CPU machines.

``orthogonal`` draws the same values as ``jax.nn.initializers.orthogonal``; only its batching
differs. The orthogonal initialiser takes a QR decomposition, and a vmapped one (networks built
inside ``jax.vmap(trainer.init)`` over seeds, or re-initialised by a vmapped reset) becomes a
*batched* LAPACK call, which can deadlock XLA:CPU's thread pool on a small host. Here a vmapped
call runs one unbatched QR per batch element in sequence instead (``jaxlab.core.batching``,
where the deadlock is explained); the cost is negligible (inits are one-off).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxlab.core import batching


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
    return batching.sequential(lambda k: base(k, shape, dtype, **kwargs))(key)

  return init


# Kernel initialiser names a network config may choose (``kernel``).
KERNEL_INITS = ("orthogonal", "lecun_uniform")


def kernel(name: str, gain: float) -> jax.nn.initializers.Initializer:
  """The kernel initialiser called ``name``.

  Args:
    name: "orthogonal": ``orthogonal(gain)`` (spec §2.2's gains: sqrt(2) for hidden layers, 0.01
      for policy and Q heads, 1.0 for value heads). "lecun_uniform": LeCun-uniform,
      U(±sqrt(3 / fan_in)), brax.training's default for every layer; it has no gain, ``gain`` is
      ignored.
    gain: the orthogonal gain.

  Returns:
    ``init(key, shape, dtype=float32) -> array``.

  Raises:
    ValueError: an unknown name.
  """
  if name == "orthogonal":
    return orthogonal(gain)
  if name == "lecun_uniform":
    return jax.nn.initializers.lecun_uniform()  # no QR: safe under vmap as it is
  raise ValueError(f"kernel initialiser {name!r} is not valid; expected one of "
                   f"{', '.join(KERNEL_INITS)}")
