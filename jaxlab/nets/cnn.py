"""Convolutional encoders for pixel observations (spec rl.md §2.2 "Atari CNN", §6).

One module, ``CNN``, builds both encoders the papers use, so the encoder is a config value:

* ``atari_cnn``: the Nature-DQN stack of the Stable-Gradients / SIGReg code, 32 -> 64 -> 64
  channels, kernels 8 / 4 / 3, strides 4 / 2 / 1, no padding: 84x84 -> 20 -> 9 -> 7, so the
  flattened output has 7 * 7 * 64 = 3136 features. Pixels are divided by 255.
* ``minatar_cnn``: MinAtar's 10x10 frames are too small for that stack (spec §6 note). One
  16-channel 3x3 convolution with stride 1 and no padding (10 -> 8, 1024 features), the network
  of the MinAtar DQN baseline and of purejaxql's PQN-MinAtar encoder. MinAtar observations are
  already 0/1, so the input is not rescaled.

Every convolution is ``Conv -> [LayerNorm over (C, H, W)] -> activation``. The optional LayerNorm
normalises each sample over all channels and positions, with one learned scale and bias per
(h, w, c) entry, like ``torch.nn.LayerNorm([C, H, W])`` in the reference code (spec §2.2). Kernels
are orthogonal with gain sqrt(2) and biases zero (spec §2.2 "Initialisation").

Like ``MLP``, the forward pass can return every layer's output ("conv.0", "conv.1", ...), each
[..., h, w, c] post-activation. The representation metrics treat all leading axes as batch
axes, so a conv feature's dormant ratio is over channels, pooled over positions and samples.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxlab.nets import initializers
from jaxlab.nets.mlp import ACTIVATIONS
from jaxlab.nets.mlp import LAYERNORM_EPSILON
from jaxlab.nets.mlp import activation_fn

# (channels, kernel, stride) per convolution, spec §2.2 and the MinAtar baseline.
_LAYERS = {
  "atari_cnn": ((32, 8, 4), (64, 4, 2), (64, 3, 1)),
  "minatar_cnn": ((16, 3, 1),),
}
# What the raw observation is multiplied by: Atari frames are uint8 pixels (spec §2.2).
_INPUT_SCALE = {"atari_cnn": 1.0 / 255.0, "minatar_cnn": 1.0}
ENCODERS = tuple(_LAYERS)


def conv_output_hw(height: int, width: int, kind: str) -> tuple[int, int]:
  """Spatial size after the ``kind`` stack (VALID padding): (H, W) -> (h, w)."""
  for _, k, s in _LAYERS[kind]:
    height, width = (height - k) // s + 1, (width - k) // s + 1
  return height, width


class CNN(nnx.Module):
  """Atari or MinAtar convolutional encoder; returns flattened features [..., output_size]."""

  def __init__(self, obs_shape: Sequence[int], *, kind: str = "atari_cnn",
               use_layernorm: bool = False, activation: str = "relu",
               input_scale: float | None = None, kernel_gain: float = math.sqrt(2.0),
               kernel_init: str = "orthogonal", dtype: Any = None,
               param_dtype: Any = jnp.float32, rngs: nnx.Rngs):
    """Builds the convolutions.

    Args:
      obs_shape: (H, W, C) of one observation (channels last, as gymnax and envpool-JAX give).
      kind: "atari_cnn" | "minatar_cnn".
      use_layernorm: LayerNorm over (C, H, W) after every convolution.
      activation: elementwise activation name (see ``jaxlab.nets.ACTIVATIONS``).
      input_scale: multiplies the observation first; None: 1/255 for Atari, 1 for MinAtar.
      kernel_gain: gain of the orthogonal kernel initialiser.
      kernel_init: "orthogonal" | "lecun_uniform" (``initializers.kernel``; no gain).
      dtype: computation dtype (None: from the inputs and parameters).
      param_dtype: parameter dtype.
      rngs: ``nnx.Rngs`` with a "params" (or default) stream.

    Raises:
      ValueError: unknown kind or activation, an observation that is not (H, W, C), or one too
        small for the stack (the message names the smallest valid size).
    """
    if kind not in _LAYERS:
      raise ValueError(f"encoder kind={kind!r} is not valid; expected one of "
                       f"{', '.join(ENCODERS)}")
    if activation not in ACTIVATIONS:
      raise ValueError(f"activation={activation!r} is not valid; expected one of "
                       f"{', '.join(ACTIVATIONS)}")
    obs_shape = tuple(int(d) for d in obs_shape)
    if len(obs_shape) != 3:
      raise ValueError(f"{kind} needs image observations (H, W, C), got shape {obs_shape}")
    h, w = conv_output_hw(obs_shape[0], obs_shape[1], kind)
    if h < 1 or w < 1:
      need = {"atari_cnn": 36, "minatar_cnn": 3}[kind]
      raise ValueError(f"{kind} needs observations of at least {need}x{need} pixels, got "
                       f"{obs_shape[0]}x{obs_shape[1]}")
    self.kind = kind
    self.obs_shape = obs_shape
    self.activation = activation
    self.use_layernorm = use_layernorm
    self.input_scale = _INPUT_SCALE[kind] if input_scale is None else float(input_scale)
    init = initializers.kernel(kernel_init, kernel_gain)
    convs, norms, shapes = [], [], []
    channels, height, width = obs_shape[2], obs_shape[0], obs_shape[1]
    for out, k, s in _LAYERS[kind]:
      convs.append(nnx.Conv(channels, out, (k, k), (s, s), padding="VALID", kernel_init=init,
                            bias_init=jax.nn.initializers.zeros, dtype=dtype,
                            param_dtype=param_dtype, rngs=rngs))
      height, width, channels = (height - k) // s + 1, (width - k) // s + 1, out
      shapes.append((height, width, channels))
      if use_layernorm:
        norms.append(nnx.LayerNorm(height * width * channels, epsilon=LAYERNORM_EPSILON,
                                   dtype=dtype, param_dtype=param_dtype, rngs=rngs))
    self.convs = nnx.List(convs)
    self.norms = nnx.List(norms) if use_layernorm else None
    self.feature_shapes = tuple(shapes)
    self.output_size = height * width * channels

  def __call__(self, x: jax.Array, *, return_features: bool = False,
               perturbations: Mapping[str, jax.Array] | None = None):
    """Encodes observations.

    Args:
      x: [..., H, W, C] observations (any numeric or bool dtype; cast to float).
      return_features: also return the per-layer features.
      perturbations: optional ``{"conv.i": array}`` added to that layer's output before it is
        used downstream (zeros + ``jax.grad`` give per-layer output gradients, as for ``MLP``).

    Returns:
      [..., output_size] the flattened (h, w, c) output of the last convolution; and, with
      ``return_features``, an ``OrderedDict`` ``{"conv.i": [..., h_i, w_i, c_i]}``.
    """
    if tuple(x.shape[-3:]) != self.obs_shape:
      raise ValueError(f"CNN input has trailing shape {tuple(x.shape[-3:])}, expected "
                       f"{self.obs_shape} (input shape {x.shape})")
    names = self.layer_names()
    if perturbations is not None:
      unknown = sorted(set(perturbations) - set(names))
      if unknown:
        raise ValueError(f"perturbations has unknown layer names {unknown}; valid: {names}")
    batch = x.shape[:-3]
    act = activation_fn(self.activation)
    h = x.reshape((-1,) + self.obs_shape).astype(jnp.float32) * self.input_scale
    features: collections.OrderedDict[str, jax.Array] = collections.OrderedDict()
    for i, conv in enumerate(self.convs):
      h = conv(h)
      if self.norms is not None:
        # LayerNorm over the whole (h, w, c) map of each sample (spec §2.2).
        shape = h.shape
        h = self.norms[i](h.reshape(shape[0], -1)).reshape(shape)
      h = act(h)
      name = names[i]
      if perturbations is not None and name in perturbations:
        h = h + perturbations[name].reshape(h.shape)
      features[name] = h.reshape(batch + h.shape[1:])
    out = h.reshape(batch + (self.output_size,))
    if return_features:
      return out, features
    return out

  def layer_names(self) -> tuple[str, ...]:
    """Names of the convolutions' features, in forward order ("conv.0", ...)."""
    return tuple(f"conv.{i}" for i in range(len(self.convs)))
