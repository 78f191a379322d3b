"""Policies for continuous actions in (-1, 1): SAC's squashed Gaussian and TD3's deterministic
actor, each a trunk (``make_trunk``) and a head.

Both take ``perturbations=`` and ``return_features=`` like their trunk, for health probes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxlab.nets.bronet import make_trunk
from jaxlab.nets.distributions import TanhNormal
from jaxlab.nets.heads import GaussianHead


class GaussianActor(nnx.Module):
  """SAC's policy: trunk + ``GaussianHead`` -> ``TanhNormal`` over pre-tanh actions."""

  def __init__(self, obs_size, action_size, kind, width, depth, activation, *, rngs):
    self.trunk = make_trunk(kind, obs_size, width, depth, activation, rngs)
    self.head = GaussianHead(width, action_size, rngs=rngs)

  def __call__(self, obs, *, return_features=False, perturbations=None):
    h, features = self.trunk(obs, return_features=True, perturbations=perturbations)
    dist = TanhNormal(*self.head(h))
    return (dist, features) if return_features else dist


class DeterministicActor(nnx.Module):
  """TD3's policy: trunk + Linear head + tanh, actions in (-1, 1)."""

  def __init__(self, obs_size, action_size, kind, width, depth, activation, *, rngs):
    self.trunk = make_trunk(kind, obs_size, width, depth, activation, rngs)
    self.head = nnx.Linear(width, action_size,
                           kernel_init=jax.nn.initializers.orthogonal(0.01),
                           bias_init=jax.nn.initializers.zeros, rngs=rngs)

  def __call__(self, obs, *, return_features=False, perturbations=None):
    h, features = self.trunk(obs, return_features=True, perturbations=perturbations)
    action = jnp.tanh(self.head(h))
    return (action, features) if return_features else action
