"""Flax NNX network pieces: MLP and BroNet trunks, CNN encoders, heads, action distributions,
and the continuous-action actors and twin critics of SAC / TD3."""

from jaxlab.nets.actors import DeterministicActor
from jaxlab.nets.actors import GaussianActor
from jaxlab.nets.bronet import BroNet
from jaxlab.nets.bronet import TRUNKS
from jaxlab.nets.bronet import make_trunk
from jaxlab.nets.cnn import CNN
from jaxlab.nets.critics import QNetwork
from jaxlab.nets.critics import TwinCritic
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
  "TRUNKS",
  "BroNet",
  "Categorical",
  "CategoricalHead",
  "DeterministicActor",
  "GaussianActor",
  "GaussianHead",
  "LayerLink",
  "MLP",
  "MLPSize",
  "Normal",
  "QNetwork",
  "ResidualBlock",
  "TanhNormal",
  "TwinCritic",
  "ValueHead",
  "activation_fn",
  "make_trunk",
  "preset",
  "tanh_log_det_jacobian",
]
