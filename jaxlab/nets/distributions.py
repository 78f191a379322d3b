"""Action distributions as pytrees, usable inside ``jit``, ``vmap`` and ``scan``.

Each distribution is a ``flax.struct.dataclass`` holding its parameters; methods are pure.
Batch axes are the leading axes of the parameters; continuous distributions have one event axis
(the last, of size A) and their ``log_prob`` and ``entropy`` sum over it, returning [...].

``TanhNormal`` works on raw (pre-tanh) actions: the rollout stores the raw sample, the
environment receives ``squash(raw)``, and ``log_prob(raw)`` is the density of the squashed
action. Storing raw actions avoids ``atanh`` of values at +-1, which is where naive
implementations produce infinities.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import struct

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


@struct.dataclass
class Categorical:
  """Categorical distribution over the last axis of ``logits`` [..., num_actions].

  Logits of -inf (masked actions) are allowed: they get probability 0 and contribute nothing to
  the entropy.
  """
  logits: jax.Array

  def log_probs(self) -> jax.Array:
    """Normalised log-probabilities [..., num_actions]."""
    return jax.nn.log_softmax(self.logits, axis=-1)

  def sample(self, key: jax.Array) -> jax.Array:
    """Actions [...] (int32)."""
    return jax.random.categorical(key, self.logits, axis=-1).astype(jnp.int32)

  def log_prob(self, action: jax.Array) -> jax.Array:
    """action: [...] integer -> log-probability [...]."""
    index = jnp.asarray(action, jnp.int32)[..., None]
    return jnp.take_along_axis(self.log_probs(), index, axis=-1)[..., 0]

  def entropy(self) -> jax.Array:
    """Entropy in nats [...]."""
    logp = self.log_probs()
    # p log p -> 0 as p -> 0. Replacing -inf by 0 *before* the product (not with a where on the
    # product) keeps both the value and its gradient free of 0 * inf = nan for masked actions.
    safe_logp = jnp.where(jnp.isneginf(logp), 0.0, logp)
    return -jnp.sum(jnp.exp(logp) * safe_logp, axis=-1)

  def mode(self) -> jax.Array:
    """Most likely actions [...] (int32)."""
    return jnp.argmax(self.logits, axis=-1).astype(jnp.int32)


@struct.dataclass
class Normal:
  """Diagonal Gaussian with ``loc``, ``scale`` [..., A]; one event axis (the last)."""
  loc: jax.Array
  scale: jax.Array

  def sample(self, key: jax.Array) -> jax.Array:
    """Samples [..., A]."""
    shape = jnp.broadcast_shapes(jnp.shape(self.loc), jnp.shape(self.scale))
    noise = jax.random.normal(key, shape, jnp.result_type(self.loc, self.scale))
    return self.loc + self.scale * noise

  def log_prob(self, x: jax.Array) -> jax.Array:
    """x: [..., A] -> log-density [...], summed over A."""
    z = (x - self.loc) / self.scale
    return jnp.sum(-0.5 * z * z - jnp.log(self.scale) - _HALF_LOG_2PI, axis=-1)

  def entropy(self) -> jax.Array:
    """Entropy in nats [...], summed over A."""
    scale = jnp.broadcast_to(self.scale, jnp.broadcast_shapes(jnp.shape(self.loc),
                                                              jnp.shape(self.scale)))
    return jnp.sum(0.5 + _HALF_LOG_2PI + jnp.log(scale), axis=-1)

  def mode(self) -> jax.Array:
    """The mean [..., A]."""
    return self.loc


def tanh_log_det_jacobian(raw: jax.Array) -> jax.Array:
  """log |d tanh(x) / dx| = log(1 - tanh(x)^2), elementwise, stable for large |x|.

  1 - tanh(x)^2 = 4 / (e^x + e^-x)^2, so its log is 2 (log 2 - x - softplus(-2x)); this form
  never forms 1 - tanh^2, which rounds to 0 (log -> -inf) in float32 once |x| > ~9.
  """
  return 2.0 * (math.log(2.0) - raw - jax.nn.softplus(-2.0 * raw))


@struct.dataclass
class TanhNormal:
  """tanh(X) with X ~ Normal(loc, scale) [..., A], parameterised on raw (pre-tanh) actions."""
  loc: jax.Array
  scale: jax.Array

  @property
  def base(self) -> Normal:
    """The Gaussian of the raw action."""
    return Normal(self.loc, self.scale)

  def sample_raw(self, key: jax.Array) -> jax.Array:
    """Raw actions [..., A]; the environment action is ``squash(raw)``."""
    return self.base.sample(key)

  def log_prob(self, raw: jax.Array) -> jax.Array:
    """raw: [..., A] -> log-density of the squashed action tanh(raw) [...], summed over A."""
    return self.base.log_prob(raw) - jnp.sum(tanh_log_det_jacobian(raw), axis=-1)

  def entropy(self, key: jax.Array) -> jax.Array:
    """One-sample estimate of the entropy of the squashed action [...] (as brax).

    H[tanh X] = H[X] + E[log |d tanh/dx|(X)]; the expectation has no closed form and is
    estimated with one sample drawn with ``key``.
    """
    raw = self.sample_raw(key)
    return self.base.entropy() + jnp.sum(tanh_log_det_jacobian(raw), axis=-1)

  def mode_raw(self) -> jax.Array:
    """The raw mode ``loc`` [..., A] (tanh of it is the deterministic action)."""
    return self.loc

  @staticmethod
  def squash(raw: jax.Array) -> jax.Array:
    """Raw actions -> actions in (-1, 1)."""
    return jnp.tanh(raw)
