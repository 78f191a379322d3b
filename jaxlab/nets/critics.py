"""State-action critics for continuous actions: Q(s, a) and the twin critics of SAC and TD3.

Both take ``perturbations=`` and ``return_features=`` like their trunk (``make_trunk``), so a
health probe can read every layer's features and the loss's gradient with respect to them.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from jaxlab.nets.bronet import make_trunk
from jaxlab.nets.heads import ValueHead


class QNetwork(nnx.Module):
  """Q(s, a): a trunk on ``concat(obs, action)`` and a scalar Linear head."""

  def __init__(self, obs_size: int, action_size: int, kind: str, width: int, depth: int,
               activation: str, *, rngs: nnx.Rngs):
    self.trunk = make_trunk(kind, obs_size + action_size, width, depth, activation, rngs)
    self.head = ValueHead(width, rngs=rngs)

  def __call__(self, obs, action, *, return_features=False, perturbations=None):
    """obs [..., O], action [..., A] -> Q [...] (and the trunk's features)."""
    out = self.trunk(jnp.concatenate([obs, action], axis=-1), return_features=True,
                     perturbations=perturbations)
    q = self.head(out[0])
    return (q, out[1]) if return_features else q


class TwinCritic(nnx.Module):
  """Two independent Q-networks ("q1", "q2"); features are keyed "q1/<layer>", "q2/<layer>"."""

  def __init__(self, obs_size, action_size, kind, width, depth, activation, *, rngs):
    self.q1 = QNetwork(obs_size, action_size, kind, width, depth, activation, rngs=rngs)
    self.q2 = QNetwork(obs_size, action_size, kind, width, depth, activation, rngs=rngs)

  def __call__(self, obs, action, *, return_features=False, perturbations=None):
    """obs [..., O], action [..., A] -> Q [2, ...] (and the features of both)."""
    qs, features = [], {}
    for name in ("q1", "q2"):
      pert = None if perturbations is None else {
          k[len(name) + 1:]: v for k, v in perturbations.items() if k.startswith(name + "/")}
      q, f = getattr(self, name)(obs, action, return_features=True, perturbations=pert)
      qs.append(q)
      features.update({f"{name}/{k}": v for k, v in f.items()})
    q = jnp.stack(qs)
    return (q, features) if return_features else q
