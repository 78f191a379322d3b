"""MLP trunks: plain, residual and multi-skip residual (spec rl.md §2.2).

One module, ``MLP``, builds all three layouts so that a paper's intervention is a config
value (``kind``), not a different class:

* ``plain``: ``depth`` hidden layers ``Linear -> [LN] -> act``.
* ``residual``: ``Linear(in -> W) -> [LN]`` (the projection ``g``), then ``depth`` pre-activation
  blocks ``x <- x + LN(W1 act(LN(W0 act(x))))``.
* ``multiskip``: as ``residual``, plus the projection ``g`` added after every block
  (``x <- block(x) + g``), so every block has a direct gradient path to the encoder
  (Castanyer et al. 2025). There is no rescaling: activations grow with depth, as in the paper.

If ``out_features`` is given, all kinds end with ``Linear(W -> out_features) -> [LN]`` and no
activation (the paper's trunk output, e.g. 512, that the heads read through an activation).

The forward pass records every layer's output in an ordered dict keyed by layer name, and can add
a caller-supplied perturbation to each of them. Both serve the representation diagnostics
(dormant ratio, effective rank, SIGReg, GraMa) without a second forward implementation:
``jax.grad`` with respect to zero perturbations is the gradient with respect to the layer's output
(the paper form of GraMa, spec §4.2). ``MLP.layer_graph`` lists the layers, their parameter paths
and who reads their outputs, for neuron resets (spec §4.3 and §6).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from jaxlab.nets import initializers

KINDS = ("plain", "residual", "multiskip")

# GELU is the exact (erf) form, as torch.nn.GELU, so that parity tests against the PyTorch
# reference code compare like with like. leaky_relu uses slope 0.01 in both frameworks.
_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
  "relu": jax.nn.relu,
  "tanh": jnp.tanh,
  "leaky_relu": jax.nn.leaky_relu,
  "silu": jax.nn.silu,
  "gelu": functools.partial(jax.nn.gelu, approximate=False),
}
ACTIVATIONS = tuple(_ACTIVATIONS)

# torch.nn.LayerNorm's epsilon; flax's default (1e-6) would make LN outputs differ slightly from
# the reference implementations.
LAYERNORM_EPSILON = 1e-5

# Spec §2.2 (`parse_mlp_depth`, `parse_mlp_width`): residual blocks k and width W per preset name.
_PRESET_BLOCKS = {"small": 1, "medium": 3, "large": 5, "xlarge": 10}
_PRESET_WIDTH = {"small": 512, "medium": 1536, "large": 2560, "xlarge": 5120}
PRESETS = tuple(_PRESET_BLOCKS)

Tap = Callable[[str, jax.Array], jax.Array]


def activation_fn(name: str) -> Callable[[jax.Array], jax.Array]:
  """The elementwise activation called ``name`` (one of ``ACTIVATIONS``)."""
  _check_choice("activation", name, ACTIVATIONS)
  return _ACTIVATIONS[name]


class MLPSize(NamedTuple):
  """``depth`` and ``width`` arguments of ``MLP`` for a named preset."""
  depth: int
  width: int


def preset(depth: str, width: str | None = None, *, kind: str = "multiskip") -> MLPSize:
  """MLP size for the paper's depth and width presets (spec §2.2, Table 1).

  The paper crosses depth presets with width presets; ``width`` defaults to the same name as
  ``depth``. A preset with k residual blocks has 2k + 2 Linear layers in total (projection, two
  per block, output layer). The plain MLP with the same number of Linear layers, counting the
  ``out_features`` layer as the paper does, has 2k + 1 hidden layers, which is what
  ``kind="plain"`` returns: use it with ``out_features`` set (512 in the paper).

  Args:
    depth: "small" | "medium" | "large" | "xlarge" (k = 1, 3, 5, 10).
    width: "small" | "medium" | "large" | "xlarge" (W = 512, 1536, 2560, 5120); None: as depth.
    kind: the ``MLP`` kind the size is for.

  Returns:
    ``MLPSize(depth, width)``: k for residual/multiskip, 2k + 1 hidden layers for plain.
  """
  _check_choice("depth preset", depth, PRESETS)
  width = depth if width is None else width
  _check_choice("width preset", width, PRESETS)
  _check_choice("kind", kind, KINDS)
  k = _PRESET_BLOCKS[depth]
  return MLPSize(depth=2 * k + 1 if kind == "plain" else k, width=_PRESET_WIDTH[width])


@dataclasses.dataclass(frozen=True)
class LayerLink:
  """One Linear layer of an ``MLP`` and the layers that read its outputs.

  Attributes:
    name: the layer's name, e.g. "hidden.0", "blocks.2.fc1"; also its key in the features dict.
    path: the layer's path in ``nnx.state(mlp)``; ``path + ("kernel",)`` is its [in, out] kernel,
      ``path + ("bias",)`` its [out] bias. A neuron is an index on the ``out`` axis.
    norm_path: path of the LayerNorm applied to this layer's output (scale and bias [out]), or
      None without LayerNorm.
    consumers: names of the layers in this MLP whose kernels take this layer's neuron j as input
      row j (their "outgoing weights"). Empty when the outputs leave the module (to a head); the
      network that adds the head must treat the head as the consumer.
    activated: True when ``features[name]`` is the post-activation value of the neurons (the
      dormant-ratio quantity); False when the layer's output is used without its own activation
      (residual stream writers and the output layer).
  """
  name: str
  path: tuple[str | int, ...]
  norm_path: tuple[str | int, ...] | None
  consumers: tuple[str, ...]
  activated: bool


class ResidualBlock(nnx.Module):
  """Pre-activation residual block ``x + [LN](W1 act([LN](W0 act(x))))`` of width W."""

  def __init__(self, width: int, *, linear: Callable[[int, int], nnx.Linear],
               norm: Callable[[int], nnx.LayerNorm | None]):
    """Builds the two layers; ``linear(in, out)`` and ``norm(n)`` (None: no LN) make them."""
    self.fc0 = linear(width, width)
    self.norm0 = norm(width)
    self.fc1 = linear(width, width)
    self.norm1 = norm(width)

  def __call__(self, x: jax.Array, *, activation: str = "relu",
               tap: Tap | None = None) -> jax.Array:
    """Applies the block.

    Args:
      x: [..., W] residual stream.
      activation: name of the activation.
      tap: called as ``tap(name, h)`` on the inner post-activation ("fc0") and on the branch
        output ("fc1") before it joins the stream; returns the value to use.

    Returns:
      [..., W] the updated stream.
    """
    act = _ACTIVATIONS[activation]
    tap = tap or (lambda _, h: h)
    h = tap("fc0", act(_maybe_norm(self.norm0, self.fc0(act(x)))))
    r = tap("fc1", _maybe_norm(self.norm1, self.fc1(h)))
    return x + r


class MLP(nnx.Module):
  """Plain, residual or multi-skip residual MLP with per-layer features (spec §2.2).

  Layer names (keys of the features dict, names in ``layer_graph``):

  * plain: "hidden.0" ... "hidden.{depth-1}", then "out" if ``out_features`` is set.
  * residual / multiskip: "input" (the projection g), "blocks.{i}.fc0" and "blocks.{i}.fc1" for
    each block i, then "out" if ``out_features`` is set.

  The features are: for "hidden.i" and "blocks.i.fc0", the post-activation output of the layer's
  neurons; for "input", g after its LayerNorm; for "blocks.i.fc1", the residual branch output
  ``[LN](W1 h)`` before it is added to the stream; for "out", the module output.

  All Linear layers use orthogonal kernels with gain ``kernel_gain`` (sqrt(2)) and zero biases,
  or the kernel initialiser named by ``kernel_init``.
  """

  def __init__(self, in_features: int, *, width: int, depth: int, kind: str = "plain",
               out_features: int | None = None, use_layernorm: bool = False,
               activation: str = "relu", kernel_gain: float = math.sqrt(2.0),
               kernel_init: str = "orthogonal", dtype: Any = None,
               param_dtype: Any = jnp.float32, rngs: nnx.Rngs):
    """Builds the layers.

    Args:
      in_features: size of the last input axis.
      width: hidden width W.
      depth: plain: number of hidden layers; residual/multiskip: number of residual blocks k.
      kind: "plain" | "residual" | "multiskip".
      out_features: size of a final ``Linear(W -> out_features) -> [LN]`` with no activation;
        None: no output layer, the module returns the last hidden layer (plain, post-activation)
        or the residual stream after the last block (residual/multiskip, no activation).
      use_layernorm: LayerNorm after every Linear.
      activation: "relu" | "tanh" | "leaky_relu" | "silu" | "gelu".
      kernel_gain: gain of the orthogonal kernel initialiser.
      kernel_init: "orthogonal" | "lecun_uniform" (``initializers.kernel``; no gain).
      dtype: computation dtype (None: from the inputs and parameters).
      param_dtype: parameter dtype.
      rngs: ``nnx.Rngs`` with a "params" (or default) stream.
    """
    _check_choice("kind", kind, KINDS)
    _check_choice("activation", activation, ACTIVATIONS)
    _check_positive_int("in_features", in_features)
    _check_positive_int("width", width)
    _check_positive_int("depth", depth)
    if out_features is not None:
      _check_positive_int("out_features", out_features)
    in_features, width, depth = int(in_features), int(width), int(depth)
    out_features = None if out_features is None else int(out_features)
    self.kind = kind
    self.in_features = in_features
    self.width = width
    self.depth = depth
    self.activation = activation
    self.use_layernorm = use_layernorm
    self.output_size = width if out_features is None else out_features

    linear = functools.partial(
      nnx.Linear, kernel_init=initializers.kernel(kernel_init, kernel_gain),
      bias_init=jax.nn.initializers.zeros, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def norm(n: int) -> nnx.LayerNorm | None:
      if not use_layernorm:
        return None
      return nnx.LayerNorm(n, epsilon=LAYERNORM_EPSILON, dtype=dtype, param_dtype=param_dtype,
                           rngs=rngs)

    if kind == "plain":
      sizes = [in_features] + [width] * depth
      self.hidden = nnx.List([linear(a, b) for a, b in zip(sizes[:-1], sizes[1:])])
      self.hidden_norms = nnx.List([norm(width) for _ in range(depth)]) if use_layernorm else None
    else:
      self.input = linear(in_features, width)
      self.input_norm = norm(width)
      self.blocks = nnx.List([
        ResidualBlock(width, linear=linear, norm=norm)
        for _ in range(depth)])
    if out_features is None:
      self.out = None
      self.out_norm = None
    else:
      self.out = linear(width, out_features)
      self.out_norm = norm(out_features)

  def __call__(self, x: jax.Array, *, return_features: bool = False,
               perturbations: Mapping[str, jax.Array] | None = None):
    """Applies the MLP.

    Args:
      x: [..., in_features].
      return_features: also return the per-layer features.
      perturbations: optional ``{layer_name: array}`` added to that layer's feature before it is
        used downstream (broadcastable to the feature, e.g. [..., units]). Pass zeros and
        differentiate with respect to them to get dL/d(feature) per layer.

    Returns:
      y: [..., output_size]; and, with ``return_features``, an ``OrderedDict`` in forward order
      mapping every layer name to its feature [..., units] (see the class docstring).
    """
    if x.shape[-1] != self.in_features:
      raise ValueError(f"MLP input has last axis {x.shape[-1]}, expected in_features="
                       f"{self.in_features} (input shape {x.shape})")
    names = [link.name for link in self.layer_graph()]
    if perturbations is not None:
      unknown = sorted(set(perturbations) - set(names))
      if unknown:
        raise ValueError(f"perturbations has unknown layer names {unknown}; valid: {names}")
    features: collections.OrderedDict[str, jax.Array] = collections.OrderedDict()

    def tap(name: str, h: jax.Array) -> jax.Array:
      if perturbations is not None and name in perturbations:
        h = h + perturbations[name]
      features[name] = h
      return h

    act = _ACTIVATIONS[self.activation]
    if self.kind == "plain":
      for i, layer in enumerate(self.hidden):
        norm = self.hidden_norms[i] if self.hidden_norms is not None else None
        x = tap(f"hidden.{i}", act(_maybe_norm(norm, layer(x))))
    else:
      g = tap("input", _maybe_norm(self.input_norm, self.input(x)))
      x = g
      for i, block in enumerate(self.blocks):
        x = block(x, activation=self.activation,
                  tap=lambda name, h, i=i: tap(f"blocks.{i}.{name}", h))
        if self.kind == "multiskip":
          # The global skip (spec §2.2 step 2): every block output also receives g.
          x = x + g
    if self.out is not None:
      x = tap("out", _maybe_norm(self.out_norm, self.out(x)))
    if return_features:
      return x, features
    return x

  def layer_graph(self) -> tuple[LayerLink, ...]:
    """The Linear layers in forward order, with parameter paths and consumers.

    Plain MLP: "hidden.i" is consumed by "hidden.{i+1}" (the last one by "out", if any).

    Residual / multiskip: "blocks.i.fc0" is consumed only by "blocks.i.fc1". The projection
    "input" and every "blocks.i.fc1" write into the residual stream (multiskip also adds "input"
    after every block), and stream channel j is read as input row j by every later
    "blocks.{i'}.fc0" and by "out". Those are listed as their consumers. Channel j is shared by
    all stream writers, so zeroing it in the consumers also cuts the contribution of the other
    writers' neuron j; for these layers an incoming-weights-only reset (the GraMa code variant,
    spec §4.3) is the safer choice.

    Returns:
      ``LayerLink`` per Linear layer, in forward order.
    """
    ln = self.use_layernorm
    has_out = self.out is not None
    tail = ("out",) if has_out else ()
    links = []
    if self.kind == "plain":
      for i in range(self.depth):
        nxt = (f"hidden.{i + 1}",) if i + 1 < self.depth else tail
        links.append(LayerLink(f"hidden.{i}", ("hidden", i), ("hidden_norms", i) if ln else None,
                               nxt, activated=True))
    else:
      def stream_readers(first_block: int) -> tuple[str, ...]:
        return tuple(f"blocks.{j}.fc0" for j in range(first_block, self.depth)) + tail

      links.append(LayerLink("input", ("input",), ("input_norm",) if ln else None,
                             stream_readers(0), activated=False))
      for i in range(self.depth):
        links.append(LayerLink(f"blocks.{i}.fc0", ("blocks", i, "fc0"),
                               ("blocks", i, "norm0") if ln else None, (f"blocks.{i}.fc1",),
                               activated=True))
        links.append(LayerLink(f"blocks.{i}.fc1", ("blocks", i, "fc1"),
                               ("blocks", i, "norm1") if ln else None, stream_readers(i + 1),
                               activated=False))
    if has_out:
      links.append(LayerLink("out", ("out",), ("out_norm",) if ln else None, (), activated=False))
    return tuple(links)


def _maybe_norm(norm: nnx.LayerNorm | None, x: jax.Array) -> jax.Array:
  return x if norm is None else norm(x)


def _check_choice(arg: str, value: Any, valid: tuple[str, ...]) -> None:
  if not isinstance(value, str) or value not in valid:
    raise ValueError(f"{arg}={value!r} is not valid; expected one of {', '.join(valid)}")


def _check_positive_int(arg: str, value: Any) -> None:
  # bool is an int subclass; depth=True is a bug, not depth 1.
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
    raise ValueError(f"{arg}={value!r} is not valid; expected an integer >= 1")
