"""BRO's residual LayerNorm trunk (BroNet), and the trunk choice of the off-policy networks.

BroNet (Nauman et al. 2024, spec rl.md §4.4): ``Linear -> LN -> ReLU``, then blocks
``x + LN(W1 ReLU(LN(W0 x)))``, read by a Linear head on the stream. :func:`make_trunk` picks
one of :data:`TRUNKS`: a plain ReLU ``MLP`` ("mlp"), the same with LayerNorm after every
Linear ("layernorm"), or BroNet ("bronet"); ``depth`` is the number of hidden layers (MLPs) or
of residual blocks (BroNet). The neuron layers of a BroNet (for health metrics and resets) are
``jaxlab.representations.bronet_layers``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping

import jax
from flax import nnx

from jaxlab.nets.mlp import LAYERNORM_EPSILON
from jaxlab.nets.mlp import MLP
from jaxlab.nets.mlp import activation_fn

TRUNKS = ("mlp", "layernorm", "bronet")


class BroNet(nnx.Module):
  """BRO's residual LayerNorm trunk (spec rl.md §4.4), with per-layer features like ``MLP``.

  ``x0 = ReLU(LN(W_in z))``; block i: ``x <- x + LN(W1 ReLU(LN(W0 x)))``. Features (keys of
  the features dict, also the layer names): "input" (x0, post-activation), "blocks.i.fc0"
  (post-activation hidden), "blocks.i.fc1" (the branch output before it joins the stream).
  """

  def __init__(self, in_features: int, *, width: int, depth: int, activation: str = "relu",
               rngs: nnx.Rngs):
    self.width, self.depth, self.activation = width, depth, activation
    self.output_size = width
    linear = functools.partial(
        nnx.Linear, kernel_init=jax.nn.initializers.orthogonal(math.sqrt(2.0)),
        bias_init=jax.nn.initializers.zeros, rngs=rngs)
    norm = functools.partial(nnx.LayerNorm, epsilon=LAYERNORM_EPSILON, rngs=rngs)
    self.input = linear(in_features, width)
    self.input_norm = norm(width)
    self.blocks = nnx.List([_BroBlock(linear(width, width), norm(width), linear(width, width),
                                      norm(width)) for _ in range(depth)])

  def __call__(self, x: jax.Array, *, return_features: bool = False,
               perturbations: Mapping[str, jax.Array] | None = None):
    """x: [..., in] -> [..., width] (and the features dict with ``return_features``)."""
    features = {}

    def tap(name, h):
      if perturbations is not None and name in perturbations:
        h = h + perturbations[name]
      features[name] = h
      return h

    act = activation_fn(self.activation)
    x = tap("input", act(self.input_norm(self.input(x))))
    for i, block in enumerate(self.blocks):
      h = tap(f"blocks.{i}.fc0", act(block.norm0(block.fc0(x))))
      x = x + tap(f"blocks.{i}.fc1", block.norm1(block.fc1(h)))
    return (x, features) if return_features else x


class _BroBlock(nnx.Module):

  def __init__(self, fc0, norm0, fc1, norm1):
    self.fc0, self.norm0, self.fc1, self.norm1 = fc0, norm0, fc1, norm1


def make_trunk(kind: str, in_features: int, width: int, depth: int, activation: str,
               rngs: nnx.Rngs) -> nnx.Module:
  """"mlp" | "layernorm" | "bronet" trunk; its output is read directly by a Linear head."""
  if kind == "bronet":
    return BroNet(in_features, width=width, depth=depth, activation=activation, rngs=rngs)
  return MLP(in_features, width=width, depth=depth, kind="plain", activation=activation,
             use_layernorm=kind == "layernorm", rngs=rngs)
