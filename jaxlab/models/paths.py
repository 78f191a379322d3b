"""Parameter paths as strings: the keys of every family's HF tensor map and sharding table."""

from __future__ import annotations

from typing import Sequence

import jax


def path_str(keypath: Sequence[object]) -> str:
  """``"layers/0/attn/q_dnh"`` from a jax key path into an NNX state.

  Dict keys and sequence indices name the parameter; attribute keys (the ``Variable``'s own
  value slot) do not, so a raw leaf and its ``Variable`` wrapper give the same string.
  """
  parts = []
  for k in keypath:
    if isinstance(k, jax.tree_util.DictKey):
      parts.append(str(k.key))
    elif isinstance(k, jax.tree_util.SequenceKey):
      parts.append(str(k.idx))
  return "/".join(parts)
