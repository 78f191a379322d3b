"""An on-device replay ring buffer as a pure pytree.

The buffer is laid out as ``[rows, width, ...]``: one row per vectorised env step, one column
per parallel env (``width = num_envs``). That layout makes every operation cheap and
shard-friendly:

* ``add`` writes one whole row with a ``dynamic_update_slice`` on axis 0, so when the env axis
  (axis 1) is split over the ``data`` devices, each device writes only its own envs' columns:
  no communication.
* ``sample`` draws (row, column) pairs uniformly among the rows written so far; under a mesh
  this is a gather that XLA turns into the needed collective.

All functions are pure and work on one seed's buffer; ``jax.vmap`` them (or the trainer that
holds the buffer) over seeds. Nothing here allocates behind the caller's back: the trainer
calls :func:`check_memory` with the configured capacity before :func:`init` builds the arrays.

Transitions keep ``terminated`` and ``truncated`` apart (spec rl.md §3.2 and
``jaxlab.envs.base``): the critic target bootstraps through truncations (time limits, LEAST
stops), never through terminations.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxlab.core.errors import ConfigError


@struct.dataclass
class Transition:
  """One env step as stored in the buffer. Leading axes are batch axes ([N] when added).

  Attributes:
    obs: [..., *obs_shape] float32 observation the action was taken in.
    action: [..., A] float32 action in [-1, 1] as sent to the env.
    reward: [...] float32.
    terminated: [...] bool, the step reached a terminal state (no bootstrap).
    truncated: [...] bool, the episode was cut here (time limit, LEAST stop): bootstrap.
    next_obs: [..., *obs_shape] float32, the observation the step reached (``final_obs``,
      before any auto-reset).
  """

  obs: jax.Array
  action: jax.Array
  reward: jax.Array
  terminated: jax.Array
  truncated: jax.Array
  next_obs: jax.Array


@struct.dataclass
class ReplayBuffer:
  """A ring of ``rows`` x ``width`` transitions.

  Attributes:
    data: pytree (usually a :class:`Transition`) whose leaves are [rows, width, ...].
    position: () int32, the row the next ``add`` writes.
    rows_filled: () int32, rows holding data (saturates at ``rows``).
  """

  data: Any
  position: jax.Array
  rows_filled: jax.Array

  @property
  def rows(self) -> int:
    return jax.tree.leaves(self.data)[0].shape[0]

  @property
  def width(self) -> int:
    return jax.tree.leaves(self.data)[0].shape[1]


def bytes_per_item(example: Any) -> int:
  """Bytes of one unbatched item shaped like ``example`` (arrays or ShapeDtypeStructs)."""
  return int(sum(np.prod(x.shape, dtype=np.int64) * np.dtype(x.dtype).itemsize
                 for x in jax.tree.leaves(example)))


def memory_bytes(example: Any, capacity: int, width: int, copies: int = 1) -> int:
  """Bytes that ``copies`` buffers of ``capacity`` items (rounded down to whole rows) take."""
  rows = capacity // width
  return bytes_per_item(example) * rows * width * copies


def available_memory_bytes() -> int | None:
  """Memory the buffers could use: the summed ``bytes_limit`` of the local accelerators, or
  on CPU (all CPU devices share the host's memory) Linux's ``MemAvailable`` (free memory plus
  reclaimable caches), else the total physical memory; None if unknown."""
  devices = jax.local_devices()
  if devices[0].platform != "cpu":
    limits = [(d.memory_stats() or {}).get("bytes_limit") for d in devices]
    return int(sum(limits)) if all(limits) else None
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  try:
    return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
  except (ValueError, OSError, AttributeError):
    return None


def check_memory(example: Any, capacity: int, width: int, copies: int, max_gb: float,
                 key: str = "config.replay.capacity",
                 limit_key: str = "config.replay.max_gb",
                 available_bytes: int | None = -1) -> int:
  """Raises :class:`ConfigError` if the buffers would not fit; returns their bytes.

  Called before anything is allocated, so a 1M-transition buffer of a large observation times
  many seeds fails with one line instead of an out-of-memory crash deep inside XLA. Two
  limits: ``max_gb`` (a deliberate cap), and the memory the devices actually have.

  Args:
    example: one unbatched transition (arrays or ``jax.ShapeDtypeStruct``s).
    capacity: configured transitions per buffer.
    width: parallel envs (columns); ``capacity`` is rounded down to whole rows.
    copies: number of buffers (seeds trained together).
    max_gb: allowed total, in GB (1e9 bytes).
    key / limit_key: config keys named in the message.
    available_bytes: device memory to check against; -1 asks ``available_memory_bytes()``,
      None skips this check.
  """
  if capacity < 2 * width:
    raise ConfigError(f"'{key}'={capacity} must hold at least two steps of all envs "
                      f"(2 x num_envs = {2 * width})")
  total = memory_bytes(example, capacity, width, copies)
  if total > max_gb * 1e9:
    per = bytes_per_item(example)
    raise ConfigError(
        f"'{key}'={capacity} transitions x {copies} seed(s) x {per} bytes each needs "
        f"{total / 1e9:.2f} GB of device memory, over '{limit_key}'={max_gb}; lower the "
        f"capacity or num_seeds, or raise {limit_key} if the device has the memory")
  if available_bytes == -1:
    available_bytes = available_memory_bytes()
  if available_bytes is not None and total > available_bytes:
    raise ConfigError(
        f"'{key}'={capacity} transitions x {copies} seed(s) needs {total / 1e9:.2f} GB, more "
        f"than the {available_bytes / 1e9:.2f} GB of memory available on this machine's "
        f"{jax.local_devices()[0].platform} device(s); lower the capacity or num_seeds")
  return total


def init(example: Any, capacity: int, width: int) -> ReplayBuffer:
  """An empty buffer for items shaped like ``example`` (unbatched), zero-filled.

  Args:
    example: pytree of arrays (or ShapeDtypeStructs) of one item.
    capacity: maximum number of items; rounded down to a multiple of ``width``.
    width: items per ``add`` (the number of parallel envs).
  """
  if width < 1 or capacity < width:
    raise ValueError(f"replay: capacity={capacity} must be >= width={width} >= 1")
  rows = capacity // width
  data = jax.tree.map(lambda x: jnp.zeros((rows, width) + tuple(x.shape), x.dtype), example)
  return ReplayBuffer(data=data, position=jnp.zeros((), jnp.int32),
                      rows_filled=jnp.zeros((), jnp.int32))


def add(buffer: ReplayBuffer, items: Any) -> ReplayBuffer:
  """Writes one row: ``items`` leaves are [width, ...]; the oldest row is overwritten when full."""
  def write(store, new):
    if new.shape != store.shape[1:]:
      raise ValueError(f"replay.add: item batch of shape {new.shape}, expected "
                       f"{store.shape[1:]} ([width, ...])")
    start = (buffer.position,) + (0,) * new.ndim
    return jax.lax.dynamic_update_slice(store, new[None].astype(store.dtype), start)

  data = jax.tree.map(write, buffer.data, items)
  rows = buffer.rows
  return ReplayBuffer(data=data, position=(buffer.position + 1) % rows,
                      rows_filled=jnp.minimum(buffer.rows_filled + 1, rows))


def size(buffer: ReplayBuffer) -> jax.Array:
  """() int32, number of valid items."""
  return buffer.rows_filled * buffer.width


def sample(buffer: ReplayBuffer, key: jax.Array, batch_size: int) -> Any:
  """``batch_size`` items drawn uniformly (with replacement) among the valid ones.

  Rows are drawn in ``[0, rows_filled)``: before the ring wraps, rows are written in order from
  0, so exactly these hold data; after it wraps, every row does. Sampling an empty buffer
  returns zeros (row 0); callers start learning only once ``size`` is large enough.

  Returns:
    Pytree like ``data`` with leaves [batch_size, ...].
  """
  k_row, k_col = jax.random.split(key)
  row = jax.random.randint(k_row, (batch_size,), 0, jnp.maximum(buffer.rows_filled, 1))
  col = jax.random.randint(k_col, (batch_size,), 0, buffer.width)
  return jax.tree.map(lambda x: x[row, col], buffer.data)
