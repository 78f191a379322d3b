"""Flax NNX network pieces: MLP trunks, CNN encoders, actor/critic heads, action distributions."""

from jaxlab.nets.cnn import CNN
from jaxlab.nets.cnn import ENCODERS
from jaxlab.nets.distributions import Categorical
from jaxlab.nets.distributions import Normal
from jaxlab.nets.distributions import TanhNormal
from jaxlab.nets.distributions import tanh_log_det_jacobian
from jaxlab.nets.heads import CategoricalHead
from jaxlab.nets.heads import GaussianHead
from jaxlab.nets.heads import ValueHead
from jaxlab.nets.mlp import ACTIVATIONS
from jaxlab.nets.mlp import KINDS
from jaxlab.nets.mlp import LayerLink
from jaxlab.nets.mlp import MLP
from jaxlab.nets.mlp import MLPSize
from jaxlab.nets.mlp import PRESETS
from jaxlab.nets.mlp import ResidualBlock
from jaxlab.nets.mlp import activation_fn
from jaxlab.nets.mlp import preset

__all__ = [
  "ACTIVATIONS",
  "CNN",
  "ENCODERS",
  "KINDS",
  "PRESETS",
  "Categorical",
  "CategoricalHead",
  "GaussianHead",
  "LayerLink",
  "MLP",
  "MLPSize",
  "Normal",
  "ResidualBlock",
  "TanhNormal",
  "ValueHead",
  "activation_fn",
  "preset",
  "tanh_log_det_jacobian",
]
