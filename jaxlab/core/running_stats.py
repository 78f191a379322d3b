"""Running mean and variance of a stream of arrays, as pure functions.

Used for observation normalisation by ``jaxlab.envs.NormalizeObservation`` and by trainers.
Each ``update`` merges the moments of a whole batch into the running moments with the
parallel-variance formula (Chan, Golub and LeVeque, 1979), so the result does not depend on
how the stream was cut into batches, up to float32 rounding:

    delta = mean_b - mean_a
    n     = n_a + n_b
    mean  = mean_a + delta * n_b / n
    var   = (var_a * n_a + var_b * n_b + delta**2 * n_a * n_b / n) / n

Variances are population variances (``ddof=0``), as ``np.var``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class RunningStats:
  """Running moments of arrays of one shape.

  Attributes:
    mean: ``shape`` float32, mean of everything seen so far.
    var: ``shape`` float32, population variance of everything seen so far (1 before the
      first update, so that ``normalize`` starts as the identity).
    count: () float32, number of samples seen. float32 rather than int32 because an int32
      count overflows after 2**31 samples, which a long vectorised run reaches; the
      relative rounding of a float32 count (1e-7) is harmless in the update weights.
  """

  mean: jax.Array
  var: jax.Array
  count: jax.Array


def init(shape: tuple[int, ...] | int) -> RunningStats:
  """Returns empty statistics for samples of ``shape``."""
  shape = (shape,) if isinstance(shape, int) else tuple(shape)
  return RunningStats(
      mean=jnp.zeros(shape, jnp.float32),
      var=jnp.ones(shape, jnp.float32),
      count=jnp.zeros((), jnp.float32),
  )


def update(stats: RunningStats, batch: jax.Array) -> RunningStats:
  """Merges a batch of samples into the statistics.

  Args:
    stats: statistics over samples of shape ``S``.
    batch: ``[*B, *S]`` samples; all leading axes ``B`` (zero or more) are batch axes.

  Returns:
    Statistics over the old samples and the ``prod(B)`` new ones.
  """
  sample_ndim = stats.mean.ndim
  if batch.ndim < sample_ndim or batch.shape[batch.ndim - sample_ndim:] != stats.mean.shape:
    raise ValueError(
        f'running_stats.update: batch of shape {batch.shape} does not end with the sample '
        f'shape {stats.mean.shape}')
  batch = jnp.reshape(batch.astype(jnp.float32), (-1,) + stats.mean.shape)
  n_b = jnp.asarray(batch.shape[0], jnp.float32)
  # Two-pass moments of the batch: summing squared deviations from the batch mean avoids the
  # cancellation of E[x^2] - E[x]^2 in float32 when |mean| >> std.
  mean_b = jnp.mean(batch, axis=0)
  var_b = jnp.mean(jnp.square(batch - mean_b), axis=0)

  n_a = stats.count
  n = n_a + n_b
  delta = mean_b - stats.mean
  mean = stats.mean + delta * (n_b / n)
  m2 = stats.var * n_a + var_b * n_b + jnp.square(delta) * (n_a * n_b / n)
  # With n_a == 0 the prior var (1) is weighted by 0, so the first update gives the batch's
  # own moments exactly.
  return RunningStats(mean=mean, var=m2 / n, count=n)


def normalize(
    stats: RunningStats, x: jax.Array, clip: float | None = 5.0, eps: float = 1e-8
) -> jax.Array:
  """Standardises ``x`` (``[*B, *S]``) with the running moments and clips to ``[-clip, clip]``.

  Returns float32. ``clip=None`` disables clipping.
  """
  y = (x.astype(jnp.float32) - stats.mean) * jax.lax.rsqrt(stats.var + eps)
  if clip is not None:
    y = jnp.clip(y, -clip, clip)
  return y
