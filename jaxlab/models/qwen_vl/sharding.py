"""Sharding rules of Qwen2.5-VL as data: the decoder's tables plus rows for the vision tower.

Every layout of :data:`jaxlab.models.decoder.sharding.RULES` exists here under the same name.
A table is the decoder's table with a few rows in front for the parameters only the VLM has:

* The text model (``text/...``) has the decoder's parameter names, so the decoder's rows
  (matched on the end of the path) place it exactly as a :class:`Decoder`.
* A vision block's attention and SwiGLU have the decoder's names too (``visual/blocks/i/attn/
  q_dnh``, ``.../mlp/gate_df``), so the same rows place them: FSDP splits the vision width
  ``Dv``, tensor parallelism splits heads and ``F``. Rows in front add what the decoder lacks:
  the MLP's biases (split like ``F`` under tensor parallelism), the patch embedding and the
  merger's two matrices (Megatron-style: ``fc1`` splits its output, ``fc2`` its input).
* Norm scales and the remaining biases are small and replicated.

A mesh axis that does not divide a dimension is dropped for that dimension (the decoder's
:func:`~jaxlab.models.decoder.sharding.fit_spec`): the dimension is replicated, which is always
correct. For the published Qwen2.5-VL checkpoints (vision width 1280, 16 heads of 80,
``F`` = 3420, merger width 5120; text 3B: width 2048, 16 heads / 2 kv heads, ``F`` = 11008;
7B: width 3584, 28 heads / 4 kv heads, ``F`` = 18944) this happens for:

* the vision ``F`` = 3420 = 2^2 * 855 on a ``tensor`` axis of 8 (a 2 or 4 split works);
* the text kv heads (2 for 3B, 4 for 7B) on a larger ``tensor`` axis, and 7B's 28 query heads
  on ``tensor`` = 8, exactly as for the decoder family;
* everything divides any power-of-two ``fsdp`` axis up to 256 (1280 = 2^8 * 5, the merger
  width 5120 and the text widths 2048 = 2^11, 3584 = 2^9 * 7).

:func:`fallbacks` lists those replicated dimensions for a config and a mesh.

The vision tower runs on all patches of a batch as one sequence, so its activations are not
split over ``data``; the text model's batch is, as for the decoder.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Sequence

import jax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxlab.models.decoder import sharding as decoder_sharding
from jaxlab.models.decoder.sharding import (CACHE_SPEC, Rules, cache_sharding,  # noqa: F401
                                            fit_spec)
from jaxlab.models.paths import path_str
from jaxlab.models.qwen_vl.modeling import Prompt

__all__ = ["RULES", "CACHE_SPEC", "cache_sharding", "fallbacks", "placement", "prompt_shardings",
           "rules_for", "shard_model", "shard_prompt", "spec_for", "state_shardings"]

# The vision MLP's gate/up biases follow F, the merger's fc1 bias follows fc1's output.
_TP_BIASES: Rules = (
    (r"visual/blocks/\d+/mlp/(gate|up)_bias_f$", P("tensor")),
    (r"visual/merger/fc1_bias_w$", P("tensor")),
)

_FSDP_VISION: Rules = (
    (r"visual/patch_embed_pd$", P(None, "fsdp")),
    (r"visual/merger/fc1_ww$", P("fsdp", None)),
    (r"visual/merger/fc2_wd$", P("fsdp", None)),
)

# The patch embedding (C*T*P*P = 1176 rows) is small: replicated under pure tensor parallelism
# so that the first block's norm sees whole rows.
_TP_VISION: Rules = _TP_BIASES + (
    (r"visual/patch_embed_pd$", P()),
    (r"visual/merger/fc1_ww$", P(None, "tensor")),
    (r"visual/merger/fc2_wd$", P("tensor", None)),
)

_FSDP_TP_VISION: Rules = _TP_BIASES + (
    (r"visual/patch_embed_pd$", P(None, "fsdp")),
    (r"visual/merger/fc1_ww$", P("fsdp", "tensor")),
    (r"visual/merger/fc2_wd$", P("tensor", "fsdp")),
)

_VISION_ROWS: dict[str, Rules] = {"replicated": (), "fsdp": _FSDP_VISION, "tp": _TP_VISION,
                                  "fsdp_tp": _FSDP_TP_VISION}

RULES: dict[str, Rules] = {
    name: tuple(_VISION_ROWS[name]) + tuple(table)
    for name, table in decoder_sharding.RULES.items()
}


def rules_for(layout: Rules | str) -> Rules:
  """The table of ``layout`` (a key of :data:`RULES`), or ``layout`` itself if it is a table.

  Raises:
    ValueError: an unknown layout name (naming the known ones).
  """
  if not isinstance(layout, str):
    return layout
  if layout not in RULES:
    raise ValueError(f"unknown sharding layout {layout!r}; expected one of {sorted(RULES)}")
  return RULES[layout]


def spec_for(path: str, shape: Sequence[int], layout: Rules | str, mesh: Mesh) -> P:
  """The spec of one parameter (``"visual/blocks/0/attn/q_dnh"``), fitted to its shape."""
  return decoder_sharding.spec_for(path, shape, rules_for(layout), mesh)


def state_shardings(state: Any, mesh: Mesh, layout: Rules | str = "fsdp") -> Any:
  """A pytree like ``state`` (a QwenVL's NNX State) with a ``NamedSharding`` per parameter."""
  return decoder_sharding.state_shardings(state, mesh, rules_for(layout))


def shard_model(model: nnx.Module, mesh: Mesh, layout: Rules | str = "fsdp") -> nnx.Module:
  """Moves every parameter of a :class:`QwenVL` onto ``mesh`` following ``layout``."""
  return decoder_sharding.shard_model(model, mesh, rules_for(layout))


def placement(mesh: Mesh | None, shardings: Any = None, layout: Rules | str | None = None
              ) -> Callable[[str, tuple[int, ...]], Any]:
  """``(path, shape) -> Sharding or None`` for a loader.

  Args:
    mesh: place on this mesh following ``layout`` (default "fsdp"); None: the default device.
    shardings: overrides ``mesh``: a dict path -> Sharding, or a callable (path, shape) ->
      Sharding.
    layout: a key of :data:`RULES` or a table.
  """
  if shardings is not None:
    if callable(shardings):
      return shardings
    return lambda p, shape: shardings[p]
  if mesh is None:
    return lambda p, shape: None
  rules = rules_for(layout or "fsdp")
  return lambda p, shape: NamedSharding(mesh, decoder_sharding.spec_for(p, shape, rules, mesh))


_BATCH = ("data", "fsdp")


def prompt_shardings(prompt: Prompt, mesh: Mesh) -> Prompt:
  """Shardings for a :class:`~jaxlab.models.qwen_vl.modeling.Prompt`: its rows over the
  data-parallel axes (``tokens``/``mask`` ``[B, T]``, ``positions`` ``[3, B, T]``, ``deltas``
  ``[B]``) and the patches replicated (the vision tower runs on all of them as one sequence).
  A batch that the data-parallel axes do not divide is replicated."""

  def on(spec: P, x: Any) -> NamedSharding:
    return NamedSharding(mesh, fit_spec(spec, x.shape, mesh))

  return prompt.replace(
      tokens=on(P(_BATCH, None), prompt.tokens), mask=on(P(_BATCH, None), prompt.mask),
      positions=on(P(None, _BATCH, None), prompt.positions),
      deltas=on(P(_BATCH), prompt.deltas),
      pixel_values=None if prompt.pixel_values is None else NamedSharding(mesh, P()))


def shard_prompt(prompt: Prompt, mesh: Mesh) -> Prompt:
  """``prompt`` with its arrays placed by :func:`prompt_shardings`."""
  return jax.device_put(prompt, prompt_shardings(prompt, mesh))


def _size(mesh: Mesh, axis: Any) -> int:
  names = axis if isinstance(axis, tuple) else (axis,)
  size = 1
  for n in names:
    size *= mesh.shape[n]
  return size


def fallbacks(state: Any, mesh: Mesh, layout: Rules | str = "fsdp") -> list[str]:
  """The dimensions whose rule names a mesh axis (of size > 1) that does not divide them.

  Args:
    state: a QwenVL's NNX State (abstract shapes are enough, e.g. from
      :func:`jaxlab.models.qwen_vl.modeling.abstract_qwen_vl`).
    mesh: the mesh.
    layout: a key of :data:`RULES` or a table.

  Returns:
    ``"path dim=i size=n axis=a"`` lines, one per replicated dimension, in path order.
  """
  rules = rules_for(layout)
  out = []
  for kp, x in jax.tree_util.tree_leaves_with_path(state):
    p = path_str(kp)
    spec = next((s for pattern, s in rules if re.search(pattern, p)), P())
    fitted = fit_spec(spec, x.shape, mesh)
    for i, (want, got) in enumerate(zip(spec, fitted)):
      if want is not None and got is None and _size(mesh, want) > 1:
        out.append(f"{p} dim={i} size={x.shape[i]} axis={want}")
  return out
