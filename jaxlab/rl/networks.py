"""Actor and critic networks for on-policy agents, built from ``jaxlab.nets`` pieces.

Trainers hold networks as ``(graphdef, params)``: the graphdef is static, params is a pytree that
flows through jit, vmap over seeds and checkpoints. ``apply`` merges them inside the traced
function only.

Every network is ``[encoder] -> [trunk MLP] -> head`` (spec rl.md §2.2, §6), configured by the
``config.network`` group:

* ``encoder``: "none" (observations are flattened into the trunk), "minatar_cnn" or
  "atari_cnn" (``jaxlab.nets.CNN``), with ``cnn_layernorm`` for LayerNorm over (C, H, W).
* ``kind``: the trunk layout, "plain" | "residual" | "multiskip" (``jaxlab.nets.MLP``), or "none"
  for no trunk at all (the head reads the encoder output or the flat observation directly).
* ``preset``: "" (use the explicit widths/depths) or a paper size "small" | "medium" | "large" |
  "xlarge" (``jaxlab.nets.preset``: residual blocks k, or 2k + 1 plain layers, and width W).
* ``trunk_out``: 0, or the size of a final trunk ``Linear(W -> trunk_out) -> [LN]`` without
  activation (the paper's 512-d trunk output); heads then read it through the activation.
* ``init`` (PPO's networks only; absent elsewhere means "orthogonal"): "orthogonal" (spec §2.2:
  gain sqrt(2) in the trunk and encoder, 0.01 for the policy head with its Gaussian scale
  starting at 1.0, 1.0 for the value head) or "lecun_uniform" (brax.training's PPO default:
  every kernel LeCun-uniform, every bias zero, so a Gaussian scale starts at softplus(0) + 0.001
  = 0.694 plus a state-dependent kernel term).

The "representation" of a network is its trunk output, the penultimate feature that SIGReg
regularises (spec §1.4) and the rank metrics measure. Keys missing from an older config take
the defaults that reproduce the original layout (no encoder, no ``trunk_out``, no preset).
"""

from __future__ import annotations

import collections
from typing import Any

import jax
import ml_collections
from flax import nnx

from jaxlab import nets
from jaxlab.core.config import require, require_choice
from jaxlab.core.errors import ConfigError
from jaxlab.envs.base import EnvSpec
from jaxlab.nets import initializers

# Trunk kinds accepted in config: the MLP layouts, plus "none" (no trunk).
TRUNK_KINDS = nets.KINDS + ("none",)
ENCODERS = ("none",) + nets.ENCODERS
# Kernel initialisers of ``config.network.init`` (PPO).
INITS = initializers.KERNEL_INITS


def network_defaults() -> dict[str, Any]:
  """The encoder/trunk keys of a ``config.network`` group, with the original layout's values."""
  return dict(encoder="none", cnn_layernorm=False, preset="", trunk_out=0)


def check_config(c: ml_collections.ConfigDict, size_keys: tuple[str, ...]) -> None:
  """Checks ``config.network``: names, preset, and the sizes ``size_keys`` (widths, depths).

  Args:
    c: the whole config (messages name ``config.network.<key>``).
    size_keys: the width/depth keys of this trainer's network group, each must be >= 1.
  """
  n = c.network
  require_choice(c, "network.kind", TRUNK_KINDS)
  require_choice(c, "network.activation", nets.ACTIVATIONS)
  require_choice(c, "network.encoder", ENCODERS)
  require_choice(c, "network.preset", ("",) + nets.PRESETS)
  if "init" in n:
    require_choice(c, "network.init", INITS)
  require(n.trunk_out >= 0, f"'config.network.trunk_out' must be >= 0 (0: no output layer), got "
          f"{n.trunk_out}")
  for key in size_keys:
    require(n[key] >= 1, f"'config.network.{key}' must be >= 1, got {n[key]}")


def build_torso(spec: EnvSpec, cfg: ml_collections.ConfigDict, *, width: int, depth: int,
                rngs: nnx.Rngs) -> tuple[nets.CNN | None, nets.MLP | None, int]:
  """``[encoder] -> [trunk MLP]``: the part of a network that maps observations to its
  representation.

  Args:
    spec: the env spec (observation shape).
    cfg: the ``config.network`` group; see the module docstring.
    width: trunk width W (ignored with a preset).
    depth: trunk depth (ignored with a preset).
    rngs: ``nnx.Rngs``.

  Returns:
    ``(encoder or None, trunk or None, representation size)``. Networks keep them as attributes
    ``encoder`` and ``trunk`` and call :func:`represent`.
  """
  encoder_kind = cfg.get("encoder", "none")
  init = kernel_init(cfg)
  if encoder_kind == "none":
    encoder = None
    size = _flat_size(spec.obs_shape)
  else:
    try:
      encoder = nets.CNN(spec.obs_shape, kind=encoder_kind,
                         use_layernorm=cfg.get("cnn_layernorm", False),
                         activation=cfg.activation, kernel_init=init, rngs=rngs)
    except ValueError as err:  # e.g. a CNN on CartPole's flat observations
      raise ConfigError(f"'config.network.encoder'={encoder_kind!r} does not fit env "
                        f"{spec.name!r}: {err}") from None
    size = encoder.output_size
  if cfg.kind == "none":
    return encoder, None, size
  width, depth = trunk_size(cfg, width, depth)
  trunk = nets.MLP(size, width=width, depth=depth, kind=cfg.kind, activation=cfg.activation,
                   use_layernorm=cfg.layernorm, out_features=cfg.get("trunk_out", 0) or None,
                   kernel_init=init, rngs=rngs)
  return encoder, trunk, trunk.output_size


class Actor(nnx.Module):
  """[Encoder] + trunk MLP + a categorical or Gaussian head (pre-tanh parameters)."""

  def __init__(self, spec: EnvSpec, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
    self.obs_ndim = len(spec.obs_shape)
    # The MLP stays the attribute `trunk`, as before encoders existed, so encoder-free networks
    # keep their parameter paths (and checkpoints).
    self.encoder, self.trunk, size = build_torso(spec, cfg, width=cfg.policy_width,
                                                 depth=cfg.policy_depth, rngs=rngs)
    act, init = head_activation(cfg), kernel_init(cfg)
    if spec.discrete:
      self.head = nets.CategoricalHead(size, spec.action_size, input_activation=act,
                                       kernel_init=init, rngs=rngs)
    else:  # brax's init has no bias under the softplus (init_scale=None)
      self.head = nets.GaussianHead(size, spec.action_size, input_activation=act,
                                    init_scale=1.0 if init == "orthogonal" else None,
                                    kernel_init=init, rngs=rngs)
    self.discrete = spec.discrete

  def __call__(self, obs: jax.Array, return_features: bool = False):
    """obs: [..., *obs_shape] -> a distribution over actions with batch shape [...].

    With ``return_features``: ``(distribution, features)``, features as :func:`represent`.
    """
    z, features = represent(self, obs)
    out = self.head(z)
    dist = nets.Categorical(out) if self.discrete else nets.TanhNormal(*out)
    if return_features:
      return dist, features
    return dist


class Critic(nnx.Module):
  """[Encoder] + trunk MLP + scalar value head."""

  def __init__(self, spec: EnvSpec, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
    self.obs_ndim = len(spec.obs_shape)
    self.encoder, self.trunk, size = build_torso(spec, cfg, width=cfg.value_width,
                                                 depth=cfg.value_depth, rngs=rngs)
    self.head = nets.ValueHead(size, input_activation=head_activation(cfg),
                               kernel_init=kernel_init(cfg), rngs=rngs)

  def __call__(self, obs: jax.Array, return_features: bool = False):
    """obs: [..., *obs_shape] -> values [...] (and features, as ``Actor``)."""
    z, features = represent(self, obs)
    value = self.head(z)
    if return_features:
      return value, features
    return value


def trunk_size(cfg: ml_collections.ConfigDict, width: int, depth: int) -> tuple[int, int]:
  """(width, depth) of the trunk: the preset's if ``cfg.preset`` is set, else the arguments."""
  name = cfg.get("preset", "")
  if not name:
    return width, depth
  size = nets.preset(name, kind=cfg.kind)
  return size.width, size.depth


def represent(net: nnx.Module, obs: jax.Array, perturbations=None):
  """Runs ``net.encoder`` and ``net.trunk`` (either may be None) on observations.

  Args:
    net: a module with attributes ``obs_ndim``, ``encoder`` and ``trunk`` (:func:`build_torso`).
    obs: [..., *obs_shape].
    perturbations: optional ``{trunk layer name: array}`` passed to the trunk (health probes and
      neuron resets: :func:`jaxlab.representations.probe`).

  Returns:
    ``(z, features)``: the representation z [..., D] (trunk output; the encoder output or the
    flat observation without a trunk) and an ``OrderedDict`` of per-layer features in forward
    order, keyed "encoder/conv.i" and "trunk/<MLP layer name>", plus "representation" (z).
  """
  features: collections.OrderedDict[str, jax.Array] = collections.OrderedDict()
  if net.encoder is None:
    x = _flatten_obs(obs, net.obs_ndim)
  else:
    x, feats = net.encoder(obs, return_features=True)
    features.update((f"encoder/{k}", v) for k, v in feats.items())
  if net.trunk is not None:
    x, feats = net.trunk(x, return_features=True, perturbations=perturbations)
    features.update((f"trunk/{k}", v) for k, v in feats.items())
  features["representation"] = x
  return x, features


def kernel_init(cfg: ml_collections.ConfigDict) -> str:
  """The kernel initialiser's name, ``cfg.init`` ("orthogonal" where the group has no ``init``)."""
  return cfg.get("init", "orthogonal")


def head_activation(cfg: ml_collections.ConfigDict) -> str | None:
  """The activation a head applies to the representation first (None: none)."""
  # A plain trunk ends activated; residual streams and the trunk_out layer do not, so their
  # heads apply the activation first (spec rl.md 2.2: "Head: ReLU -> Linear"). Without a trunk
  # the head reads the encoder's activated output, or raw observations.
  if cfg.kind == "none":
    return None
  if cfg.kind == "plain" and not cfg.get("trunk_out", 0):
    return None
  return cfg.activation


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
