"""Actor and critic heads: one Linear layer on top of a trunk feature.

Initial scales follow the Stable-Gradients / CleanRL convention (spec §2.2): orthogonal kernels
with gain 0.01 for policy and Q outputs, so the initial policy is near uniform (or near the
centre of the action range), and gain 1.0 for the PPO value head; biases start at zero.

``kernel_init="lecun_uniform"`` gives brax.training's initialisation instead (no gain).

The paper's trunks end without an activation and their heads read ``act -> Linear``;
``input_activation`` gives that in one argument.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxlab.nets import initializers
from jaxlab.nets.mlp import activation_fn


class CategoricalHead(nnx.Module):
  """Logits of a categorical policy (or Q-values of a discrete critic)."""

  def __init__(self, in_features: int, num_actions: int, *, input_activation: str | None = None,
               kernel_gain: float = 0.01, kernel_init: str = "orthogonal",
               param_dtype: Any = jnp.float32, rngs: nnx.Rngs):
    """Builds the head.

    Args:
      in_features: size of the trunk feature.
      num_actions: number of discrete actions.
      input_activation: activation applied to the input first (None: identity).
      kernel_gain: orthogonal init gain of the kernel.
      kernel_init: "orthogonal" | "lecun_uniform" (``initializers.kernel``).
      param_dtype: parameter dtype.
      rngs: ``nnx.Rngs`` for the initialisers.
    """
    self.input_activation = input_activation
    if input_activation is not None:
      activation_fn(input_activation)  # Validates the name now, not at the first call.
    self.linear = _linear(in_features, num_actions, kernel_init, kernel_gain, param_dtype, rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    """x: [..., in_features] -> logits [..., num_actions]."""
    return self.linear(_activate(self.input_activation, x))


class ValueHead(nnx.Module):
  """Scalar state value."""

  def __init__(self, in_features: int, *, input_activation: str | None = None,
               kernel_gain: float = 1.0, kernel_init: str = "orthogonal",
               param_dtype: Any = jnp.float32, rngs: nnx.Rngs):
    """Builds the head (arguments as ``CategoricalHead``)."""
    self.input_activation = input_activation
    if input_activation is not None:
      activation_fn(input_activation)
    self.linear = _linear(in_features, 1, kernel_init, kernel_gain, param_dtype, rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    """x: [..., in_features] -> values [...]."""
    return self.linear(_activate(self.input_activation, x))[..., 0]


class GaussianHead(nnx.Module):
  """Location and scale of a diagonal Gaussian over pre-tanh actions (pair with ``TanhNormal``).

  The scale is ``softplus(raw) + min_scale`` as in brax's NormalTanh: positive, smooth, and
  bounded away from zero so log-probabilities stay finite. ``raw`` is either a Linear output
  (state-dependent) or one learned vector (state-independent). Its initial bias is chosen so that
  the initial scale is ``init_scale`` (exactly for state-independent; up to the kernel term for
  state-dependent, small with the default 0.01 gain).
  """

  def __init__(self, in_features: int, action_size: int, *, state_dependent_std: bool = True,
               init_scale: float | None = 1.0, min_scale: float = 1e-3,
               input_activation: str | None = None, kernel_gain: float = 0.01,
               kernel_init: str = "orthogonal", param_dtype: Any = jnp.float32,
               rngs: nnx.Rngs):
    """Builds the head.

    Args:
      in_features: size of the trunk feature.
      action_size: action dimension A.
      state_dependent_std: scale from a Linear layer of the input (True) or a learned vector.
      init_scale: scale at initialisation; must exceed ``min_scale``. None: the bias under the
        softplus starts at zero (brax's), so the scale starts at softplus(0) + min_scale =
        log(2) + min_scale plus the kernel term.
      min_scale: lower bound of the scale.
      input_activation: activation applied to the input first (None: identity).
      kernel_gain: orthogonal init gain of the kernels.
      kernel_init: "orthogonal" | "lecun_uniform" (``initializers.kernel``).
      param_dtype: parameter dtype.
      rngs: ``nnx.Rngs`` for the initialisers.
    """
    if not (init_scale is None or init_scale > min_scale) or not min_scale > 0:
      raise ValueError(f"GaussianHead needs init_scale > min_scale > 0, got init_scale="
                       f"{init_scale}, min_scale={min_scale}")
    if input_activation is not None:
      activation_fn(input_activation)
    self.input_activation = input_activation
    self.action_size = action_size
    self.state_dependent_std = state_dependent_std
    self.min_scale = min_scale
    # softplus^-1(y) = log(expm1(y)): the raw value whose scale is init_scale.
    raw0 = 0.0 if init_scale is None else math.log(math.expm1(init_scale - min_scale))
    self.loc = _linear(in_features, action_size, kernel_init, kernel_gain, param_dtype, rngs)
    if state_dependent_std:
      self.raw_scale = nnx.Linear(
        in_features, action_size, kernel_init=initializers.kernel(kernel_init, kernel_gain),
        bias_init=jax.nn.initializers.constant(raw0), param_dtype=param_dtype, rngs=rngs)
    else:
      self.raw_scale = nnx.Param(jnp.full((action_size,), raw0, param_dtype))

  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """x: [..., in_features] -> (loc [..., A], scale [..., A])."""
    x = _activate(self.input_activation, x)
    loc = self.loc(x)
    if self.state_dependent_std:
      raw = self.raw_scale(x)
    else:
      raw = jnp.broadcast_to(self.raw_scale[...], loc.shape)
    return loc, jax.nn.softplus(raw) + self.min_scale


def _linear(in_features: int, out_features: int, init: str, gain: float, param_dtype: Any,
            rngs: nnx.Rngs) -> nnx.Linear:
  return nnx.Linear(in_features, out_features, kernel_init=initializers.kernel(init, gain),
                    bias_init=jax.nn.initializers.zeros, param_dtype=param_dtype, rngs=rngs)


def _activate(name: str | None, x: jax.Array) -> jax.Array:
  return x if name is None else activation_fn(name)(x)
