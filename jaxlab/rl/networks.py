"""Actor and critic networks for on-policy agents, built from ``jaxlab.nets`` pieces.

Trainers hold networks as ``(graphdef, params)``: the graphdef is static, params is a pytree that
flows through jit, vmap over seeds and checkpoints. ``apply`` merges them inside the traced
function only.
"""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
from flax import nnx

from jaxlab import nets
from jaxlab.envs.base import EnvSpec


class Actor(nnx.Module):
  """Trunk MLP + a categorical or Gaussian head (pre-tanh parameters)."""

  def __init__(self, spec: EnvSpec, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
    in_features = _flat_size(spec.obs_shape)
    self.obs_ndim = len(spec.obs_shape)
    self.trunk = nets.MLP(in_features, width=cfg.policy_width, depth=cfg.policy_depth,
                          kind=cfg.kind, activation=cfg.activation,
                          use_layernorm=cfg.layernorm, rngs=rngs)
    act = _head_activation(cfg)
    if spec.discrete:
      self.head = nets.CategoricalHead(cfg.policy_width, spec.action_size,
                                       input_activation=act, rngs=rngs)
    else:
      self.head = nets.GaussianHead(cfg.policy_width, spec.action_size,
                                    input_activation=act, rngs=rngs)
    self.discrete = spec.discrete

  def __call__(self, obs: jax.Array):
    """obs: [..., *obs_shape] -> a distribution over actions with batch shape [...]."""
    out = self.head(self.trunk(_flatten_obs(obs, self.obs_ndim)))
    if self.discrete:
      return nets.Categorical(out)
    loc, scale = out
    return nets.TanhNormal(loc, scale)


class Critic(nnx.Module):
  """Trunk MLP + scalar value head."""

  def __init__(self, spec: EnvSpec, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
    in_features = _flat_size(spec.obs_shape)
    self.obs_ndim = len(spec.obs_shape)
    self.trunk = nets.MLP(in_features, width=cfg.value_width, depth=cfg.value_depth,
                          kind=cfg.kind, activation=cfg.activation,
                          use_layernorm=cfg.layernorm, rngs=rngs)
    self.head = nets.ValueHead(cfg.value_width, input_activation=_head_activation(cfg),
                               rngs=rngs)

  def __call__(self, obs: jax.Array) -> jax.Array:
    """obs: [..., *obs_shape] -> values [...]."""
    return self.head(self.trunk(_flatten_obs(obs, self.obs_ndim)))


def _head_activation(cfg: ml_collections.ConfigDict) -> str | None:
  # A plain trunk ends activated; residual streams do not, so their heads apply the
  # activation first (spec rl.md 2.2: "Head: ReLU -> Linear").
  return None if cfg.kind == "plain" else cfg.activation


def _flat_size(shape: tuple[int, ...]) -> int:
  size = 1
  for d in shape:
    size *= d
  return size


def _flatten_obs(obs: jax.Array, obs_ndim: int) -> jax.Array:
  # Image-like observations (MinAtar's [10, 10, C]) feed an MLP flattened.
  if obs_ndim == 1:
    return obs
  return obs.reshape(obs.shape[:obs.ndim - obs_ndim] + (-1,))


def split(module: nnx.Module) -> tuple[Any, Any]:
  """(graphdef, params) of a module; params is a plain pytree of arrays."""
  return nnx.split(module)


def apply(graphdef: Any, params: Any, *args, **kwargs):
  """Calls the module described by ``graphdef`` with ``params`` (inside jit)."""
  return nnx.merge(graphdef, params)(*args, **kwargs)
