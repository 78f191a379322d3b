"""``sequential``: a function that, under ``jax.vmap``, runs its batch one element at a time.

The one workaround for an XLA:CPU deadlock that jaxlab meets wherever LAPACK runs under vmap:
orthogonal initialisers (a QR per layer) in networks built inside ``jax.vmap(trainer.init)``
or re-initialised by a vmapped neuron reset, the SVDs of the rank metrics, and Kron's
triangular solves, all vmapped over seeds (or arms).

What goes wrong: a vmapped QR / SVD / triangular solve lowers to jaxlib's *batched* LAPACK
kernel, which splits its batch over XLA's CPU thread pool and then blocks the pool thread it
runs on until all the pieces are done. XLA also runs independent operations of one program at
once (one QR per layer, one solve per parameter tensor). On a small pool (2 threads on a 2-core
host) every pool thread can end up blocked inside such a kernel, waiting for pieces that no
free thread is left to run, and the program hangs for good (jax 0.10.2; a stack dump shows
every pool thread in ``jax::ParallelBatchMap``). It was seen with about ten orthogonal inits
over 2 seeds, two rank metrics at once, and a vmapped Kron update of two 256x256 kernels
(``tests/nets/test_initializers.py`` keeps a reproduction).

The fix: under vmap, ``sequential(fn)`` maps ``fn`` over the batch with ``lax.map`` (one
unbatched call per element, in sequence). Unbatched LAPACK calls run inline on the calling
thread, so they cannot starve the pool. The batch is the number of seeds, and at the call
sites the cost is nil: inits run once and resets once every ``reset.every`` gradient steps;
the rank metrics' SVDs once per health probe; Kron's triangular solves are small (one factor
per axis), and a batched kernel also solves them one element at a time, only spread over pool
threads that the rest of the step keeps busy anyway. Outside vmap ``sequential(fn)`` is
``fn``; nested vmaps nest the loops.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp


def sequential(fn: Callable[..., Any]) -> Callable[..., Any]:
  """``fn`` that, under ``jax.vmap``, runs once per batch element (``lax.map``), not batched.

  Arguments may be any pytrees; unbatched arguments are shared by every element, not copied.
  Typed PRNG keys (``jax.random.key``) pass through as their raw key data, so ``fn`` may take
  them as ``nnx.Rngs`` gives them. The results are the same as ``jax.vmap(fn)``'s (the same
  computation per element).

  Not differentiable in reverse mode (``jax.custom_batching``): use it for code that runs
  outside a gradient (initialisation, resets, metrics, optimizer internals).
  """

  def call(*args):
    leaves, treedef = jax.tree.flatten(args)
    impls = [jax.random.key_impl(x) if _is_typed_key(x) else None for x in leaves]
    raw = [jax.random.key_data(x) if impl is not None else x for x, impl in zip(leaves, impls)]

    def unwrapped(*raw):
      leaves = [jax.random.wrap_key_data(x, impl=impl) if impl is not None else x
                for x, impl in zip(raw, impls)]
      return fn(*jax.tree.unflatten(treedef, leaves))

    return jax.custom_batching.sequential_vmap(unwrapped)(*raw)

  return call


def _is_typed_key(x: Any) -> bool:
  return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)
