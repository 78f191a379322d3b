"""Which neurons a network has, where their parameters live, and who reads them.

Both the diagnostics (``metrics.py``) and the reset engine (``resets.py``) work on flat parameter
pytrees (``nnx.split`` states, plain dicts, optax states that mirror them), never on live
modules, so they run inside ``jit`` and ``vmap``. They need a static description of the
network's neuron layers: this module's :class:`NeuronLayer`. ``mlp_layers`` derives it from
``MLP.layer_graph()``, ``bronet_layers`` from a ``BroNet``'s blocks (``trunk_layers`` picks
the one that fits a trunk); hand-written networks (e.g. a conv encoder) list their own.

A *neuron* is an index on the last ("out") axis of a layer's kernel: [in, out] for Linear,
[kh, kw, in, out] for Conv (flax layout, spec rl.md §6 "GraMa" note). Its *incoming* parameters
are kernel[..., j], bias[j] and, if the layer is followed by a LayerNorm, scale[j] and bias[j]
of that norm. Its *outgoing* weights are kernel[..., j, :] (axis -2) of every consumer layer.

Paths are tuples of dict keys / attribute names / list indices, e.g.
``("policy", "trunk", "hidden", 0)``; ``path + ("kernel",)`` is the kernel. They are matched
against the leaf paths of whatever pytree is passed, with nnx's ``Variable.value`` wrapper
dropped, so an ``nnx.State`` and its ``nnx.to_pure_dict`` give the same paths.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
from flax import nnx

from jaxlab.nets import initializers
from jaxlab.nets.bronet import BroNet
from jaxlab.nets.mlp import MLP

Path = tuple[Any, ...]
Initializer = Callable[..., jax.Array]

OUTGOING_MODES = ("zero", "none", "auto")

# Attribute names under which nnx Variables (and older VariableState) keep their array. They
# appear as a trailing GetAttrKey in leaf paths and are not part of a parameter's identity.
_WRAPPER_ATTRS = frozenset({"value", "raw_value", "_raw_value"})


@dataclasses.dataclass(frozen=True)
class NeuronLayer:
  """One layer of neurons: its parameters, consumers and how to re-initialise it.

  Attributes:
    name: the layer's name; for MLPs the key of ``MLP.__call__``'s features dict.
    path: path of the layer's module in the parameter tree; ``path + ("kernel",)`` is its
      [..., in, out] kernel and ``path + ("bias",)`` its [out] bias (may be absent).
    consumers: module paths of the layers whose kernel reads this layer's neuron j on axis -2
      (their "outgoing weights" of j). A consumer whose input axis is a multiple of this layer's
      width reads a channels-last flatten of a conv map: neuron j is input row j, j + out, ...
    norm_path: path of a LayerNorm (``scale``, ``bias`` of shape [out]) applied to this layer's
      output, or None.
    activation: name of the elementwise activation whose output is this layer's feature (see
      ``jaxlab.nets.mlp.ACTIVATIONS``), or None when the feature is not activated (residual
      stream writers, output layers). Dormant ratios are defined on activated features only.
    zero_outgoing: a reset zeroes this layer's outgoing weights (ReDo / GraMa paper); False
      re-initialises incoming parameters only (the GraMa code variant, spec §4.3 item 4).
    kernel_init: ``init(key, shape, dtype)`` that made the kernel; resets draw fresh values
      from it.
    bias_init: the same for the bias.
  """
  name: str
  path: Path
  consumers: tuple[Path, ...] = ()
  norm_path: Path | None = None
  activation: str | None = None
  zero_outgoing: bool = True
  kernel_init: Initializer = initializers.orthogonal(math.sqrt(2.0))
  bias_init: Initializer = jax.nn.initializers.zeros


def mlp_layers(mlp: MLP, *, prefix: Path = (), output_consumers: Sequence[Path] = (),
               outgoing: str = "zero", exclude: Sequence[str] = (),
               kernel_init: Initializer | None = None,
               bias_init: Initializer = jax.nn.initializers.zeros) -> tuple[NeuronLayer, ...]:
  """The neuron layers of a ``jaxlab.nets.MLP``, from its ``layer_graph()``.

  Args:
    mlp: the MLP (a live or ``nnx.merge``d module; only its static structure is read).
    prefix: path of the MLP inside the parameter tree the layers will be used with, e.g.
      ``("policy", "trunk")`` for ``params["policy"]`` holding an Actor whose trunk is the MLP.
    output_consumers: module paths (full, with their own prefix) of the layers that read the
      MLP's output, e.g. the head's Linear layers (``linear_paths(actor.head, ("policy",
      "head"))``). They become consumers of every layer whose output reaches the MLP output
      directly: the last layer of a plain MLP, "out" if present, otherwise every residual-stream
      writer ("input" and each "blocks.i.fc1").
    outgoing: "zero": every reset zeroes outgoing weights (ReDo; GraMa paper text). "none":
      incoming-only resets (GraMa code). "auto": zero outgoing weights where the consumers read
      this layer alone (plain hidden layers, "blocks.i.fc0", "out"), incoming-only for residual
      stream writers, whose channel j is shared by all writers, so zeroing its readers would
      also cut every healthy writer's neuron j (spec §6, resets note).
    exclude: layer names to leave out (e.g. "out" when the MLP output is the network's final
      output, which spec §4.3 item 4 recommends never resetting).
    kernel_init: the MLP's kernel initialiser. Default: orthogonal with the MLP's default gain
      sqrt(2). ``MLP`` does not record ``kernel_gain``; pass it if the MLP was built with
      another one.
    bias_init: the MLP's bias initialiser (zeros).

  Returns:
    ``NeuronLayer`` per Linear layer, in forward order.
  """
  if outgoing not in OUTGOING_MODES:
    raise ValueError(f"outgoing={outgoing!r} is not valid; expected one of {OUTGOING_MODES}")
  if kernel_init is None:
    kernel_init = initializers.orthogonal(math.sqrt(2.0))
  prefix = tuple(prefix)
  output_consumers = tuple(tuple(p) for p in output_consumers)
  links = mlp.layer_graph()
  unknown = sorted(set(exclude) - {link.name for link in links})
  if unknown:
    raise ValueError(f"exclude has unknown layer names {unknown}; valid: "
                     f"{[link.name for link in links]}")
  paths = {link.name: prefix + tuple(link.path) for link in links}
  residual = mlp.kind != "plain"
  has_out = any(link.name == "out" for link in links)

  def reaches_output(link) -> bool:
    if has_out or not residual:
      return not link.consumers  # The last layer: its outputs leave the module.
    return not link.activated    # Stream writers: the final stream is the module output.

  layers = []
  for link in links:
    if link.name in exclude:
      continue
    consumers = tuple(paths[name] for name in link.consumers)
    if reaches_output(link):
      consumers += output_consumers
    stream_writer = residual and not link.activated and link.name != "out"
    if outgoing == "zero":
      zero = True
    elif outgoing == "none":
      zero = False
    else:
      zero = not stream_writer
    layers.append(NeuronLayer(
      name=link.name, path=paths[link.name], consumers=consumers,
      norm_path=None if link.norm_path is None else prefix + tuple(link.norm_path),
      activation=mlp.activation if link.activated else None, zero_outgoing=zero,
      kernel_init=kernel_init, bias_init=bias_init))
  return tuple(layers)


def bronet_layers(net: BroNet, prefix: Path, output_consumers: Sequence[Path],
                  outgoing: str) -> tuple[NeuronLayer, ...]:
  """The neuron layers of a ``jaxlab.nets.BroNet`` (arguments as :func:`mlp_layers`).

  "input" and every "blocks.i.fc1" write into the residual stream, which every later block
  and the head read; with ``outgoing="auto"`` those get incoming-only resets (zeroing a
  stream channel in its readers would also cut every other writer of that channel).
  """
  prefix = tuple(prefix)

  def readers(first_block):
    return tuple(prefix + ("blocks", j, "fc0") for j in range(first_block, net.depth)
                 ) + tuple(output_consumers)

  def zero(stream_writer):
    return outgoing == "zero" or (outgoing == "auto" and not stream_writer)

  layer = functools.partial(NeuronLayer,
                            kernel_init=jax.nn.initializers.orthogonal(math.sqrt(2.0)))
  out = [layer("input", prefix + ("input",), readers(0), prefix + ("input_norm",),
               net.activation, zero(True))]
  for i in range(net.depth):
    blk = prefix + ("blocks", i)
    out.append(layer(f"blocks.{i}.fc0", blk + ("fc0",), (blk + ("fc1",),), blk + ("norm0",),
                     net.activation, zero(False)))
    out.append(layer(f"blocks.{i}.fc1", blk + ("fc1",), readers(i + 1), blk + ("norm1",),
                     None, zero(True)))
  return tuple(out)


def trunk_layers(trunk: MLP | BroNet, prefix: Path, head_prefix: Path, head: nnx.Module,
                 outgoing: str, rename: str = "") -> tuple[NeuronLayer, ...]:
  """A trunk's neuron layers (``MLP`` or ``BroNet``), with the head's Linear layers as the
  consumers of its output.

  Args:
    trunk: the trunk module.
    prefix: its path in the parameter tree.
    head_prefix: the head's path in the parameter tree.
    head: the head module that reads the trunk output.
    outgoing: as in :func:`mlp_layers`.
    rename: prepended to the layer names (twin critics share layer names).
  """
  consumers = linear_paths(head, head_prefix)
  if isinstance(trunk, BroNet):
    layers = bronet_layers(trunk, prefix, consumers, outgoing)
  else:
    layers = mlp_layers(trunk, prefix=prefix, output_consumers=consumers, outgoing=outgoing)
  return tuple(dataclasses.replace(layer, name=rename + layer.name) for layer in layers)


def linear_paths(module: nnx.Module, prefix: Path = ()) -> tuple[Path, ...]:
  """Paths of every ``nnx.Linear`` / ``nnx.Conv`` inside ``module``, prefixed by ``prefix``.

  Handy for ``mlp_layers(output_consumers=...)``: a head's Linear layers are the consumers of
  the trunk output.
  """
  found = []
  for path, node in nnx.iter_graph(module):
    if isinstance(node, (nnx.Linear, nnx.Conv)):
      found.append(tuple(prefix) + tuple(path))
  return tuple(sorted(found, key=str))


def key_to_entry(key: Any) -> Any:
  """One ``jax.tree_util`` path key as a plain dict key / attribute name / index."""
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return getattr(key, attr)
  return key


def normalize_path(keypath: Sequence[Any]) -> Path:
  """A leaf's key path as a plain tuple, without nnx's Variable wrapper attribute."""
  entries = [key_to_entry(k) for k in keypath]
  if keypath and isinstance(keypath[-1], jax.tree_util.GetAttrKey) and (
      entries[-1] in _WRAPPER_ATTRS):
    entries = entries[:-1]
  return tuple(entries)


def flatten(tree: Any) -> dict[Path, jax.Array]:
  """``{normalized path: leaf}`` for every array leaf of ``tree``."""
  return {normalize_path(kp): leaf for kp, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def get(flat: Mapping[Path, jax.Array], path: Path, what: str = "parameter") -> jax.Array:
  """``flat[path]`` with an error that names the missing path and a few that exist."""
  try:
    return flat[tuple(path)]
  except KeyError:
    near = sorted((p for p in flat if p[:len(path) - 1] == tuple(path)[:-1]), key=str)[:8]
    raise KeyError(f"no {what} at path {tuple(path)}; paths with the same parent: {near}. "
                   "Check the layers' prefix against the tree passed.") from None
