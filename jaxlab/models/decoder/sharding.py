"""Sharding rules as data: parameter path pattern -> ``PartitionSpec`` over (data, fsdp, tensor).

A layout is an ordered table; the first pattern that matches a parameter's path
(``"layers/3/attn/q_dnh"``) gives its spec. Switching FSDP <-> tensor parallel is a choice of
table, never a code change. Parameters are replicated over ``data``; activations and the batch
are split over ``("data", "fsdp")`` and jit propagates the rest.

Tensor parallelism follows Megatron: q/k/v, gate/up split their output (heads / F) over
``tensor``; o and down split their input, so each layer needs one all-reduce per sub-layer.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import jax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxlab.models.paths import path_str

Rules = Sequence[tuple[str, P]]

REPLICATED: Rules = ((r".*", P()),)

# FSDP: every large matrix split along D (the dimension every layer shares), gathered just
# before use by XLA; norms and biases are tiny and replicated.
FSDP: Rules = (
    (r"embedding_vd$", P(None, "fsdp")),
    (r"lm_head_dv$", P("fsdp", None)),
    (r"attn/[qkv]_d[nk]h$", P("fsdp", None, None)),
    (r"attn/o_nhd$", P(None, None, "fsdp")),
    (r"mlp/(gate|up)_df$", P("fsdp", None)),
    (r"mlp/down_fd$", P(None, "fsdp")),
    (r".*", P()),
)

# Tensor parallel: heads, F and the vocabulary of the head over `tensor`.
TP: Rules = (
    (r"embedding_vd$", P(None, "tensor")),
    (r"lm_head_dv$", P(None, "tensor")),
    (r"attn/[qkv]_d[nk]h$", P(None, "tensor", None)),
    (r"attn/[qkv]_bias_[nk]h$", P("tensor", None)),
    (r"attn/o_nhd$", P("tensor", None, None)),
    (r"mlp/(gate|up)_df$", P(None, "tensor")),
    (r"mlp/down_fd$", P("tensor", None)),
    (r".*", P()),
)

# Both: D over fsdp, heads / F / V over tensor.
FSDP_TP: Rules = (
    (r"embedding_vd$", P("tensor", "fsdp")),
    (r"lm_head_dv$", P("fsdp", "tensor")),
    (r"attn/[qkv]_d[nk]h$", P("fsdp", "tensor", None)),
    (r"attn/[qkv]_bias_[nk]h$", P("tensor", None)),
    (r"attn/o_nhd$", P("tensor", None, "fsdp")),
    (r"mlp/(gate|up)_df$", P("fsdp", "tensor")),
    (r"mlp/down_fd$", P("tensor", "fsdp")),
    (r".*", P()),
)

RULES: dict[str, Rules] = {"replicated": REPLICATED, "fsdp": FSDP, "tp": TP, "fsdp_tp": FSDP_TP}

# The KV cache [B, K, S, H]: batch over the data-parallel axes, kv heads over tensor.
CACHE_SPEC = P(("data", "fsdp"), "tensor", None, None)


def _axis_size(mesh: Mesh, axis) -> int:
  if axis is None:
    return 1
  names = axis if isinstance(axis, tuple) else (axis,)
  size = 1
  for n in names:
    size *= mesh.shape[n]
  return size


def fit_spec(spec: P, shape: Sequence[int], mesh: Mesh) -> P:
  """Drops mesh axes from dims they do not divide (e.g. 2 kv heads on tensor=4).

  Replicating such a dim is always correct; an uneven split would need padding.
  """
  axes = list(spec) + [None] * (len(shape) - len(spec))
  return P(*[a if dim % _axis_size(mesh, a) == 0 else None for a, dim in zip(axes, shape)])


def spec_for(path: str, shape: Sequence[int], rules: Rules | str, mesh: Mesh) -> P:
  """The spec of one parameter: the first matching rule, fitted to its shape."""
  if isinstance(rules, str):
    rules = RULES[rules]
  for pattern, spec in rules:
    if re.search(pattern, path):
      return fit_spec(spec, shape, mesh)
  return P()


def state_shardings(state: Any, mesh: Mesh, rules: Rules | str = "fsdp") -> Any:
  """A pytree like ``state`` (an NNX State) with a ``NamedSharding`` per parameter."""
  return jax.tree_util.tree_map_with_path(
      lambda kp, x: NamedSharding(mesh, spec_for(path_str(kp), x.shape, rules, mesh)), state)


def shard_model(model: nnx.Module, mesh: Mesh, rules: Rules | str = "fsdp") -> nnx.Module:
  """Moves every parameter of ``model`` onto ``mesh`` following ``rules``; returns the model."""
  graphdef, state = nnx.split(model)
  state = jax.device_put(state, state_shardings(state, mesh, rules))
  return nnx.merge(graphdef, state)


def cache_sharding(mesh: Mesh, cache: Any) -> Any:
  """Shardings for a KVCache: k/v by :data:`CACHE_SPEC`, mask by batch, index replicated."""

  def one(_, x):
    if x.ndim == 4:
      spec = CACHE_SPEC
    elif x.ndim == 2:
      spec = P(("data", "fsdp"), None)
    else:
      spec = P()
    return NamedSharding(mesh, fit_spec(spec, x.shape, mesh))
  return jax.tree_util.tree_map_with_path(one, cache)
