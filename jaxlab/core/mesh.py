"""Device meshes and shardings: one code path for 1 to N devices.

A mesh has up to three named axes: ``data`` (the env / prompt batch), ``fsdp`` (parameters
split across data-parallel workers) and ``tensor`` (tensor parallelism). Arrays follow their
data: a trainer places its state with :func:`shard_batch` once, and jit propagates the rest.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxlab.core.errors import ConfigError

AXES = ("data", "fsdp", "tensor")


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A mesh over all (or the given) devices; ``data=-1`` takes whatever fsdp*tensor leave.

  Axes are created with ``AxisType.Auto``: jax 0.10 defaults to explicit axes, under which
  ordinary indexing of sharded results raises.
  """
  devices = list(devices if devices is not None else jax.devices())
  n = len(devices)
  if data == -1:
    if n % (fsdp * tensor):
      raise ConfigError(f"'config.mesh': fsdp*tensor={fsdp * tensor} does not divide the "
                        f"{n} available devices")
    data = n // (fsdp * tensor)
  if data * fsdp * tensor != n:
    raise ConfigError(f"'config.mesh': data*fsdp*tensor={data * fsdp * tensor} must equal the "
                      f"number of devices ({n})")
  auto = (jax.sharding.AxisType.Auto,) * 3
  return jax.make_mesh((data, fsdp, tensor), AXES, axis_types=auto, devices=devices)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, batch_axis: int = 0, ndim: int | None = None) -> NamedSharding:
  """Shards axis ``batch_axis`` over every data-parallel device (``data`` and ``fsdp``)."""
  spec = [None] * (batch_axis + 1)
  spec[batch_axis] = ("data", "fsdp")
  return NamedSharding(mesh, P(*spec))


def data_parallel_size(mesh: Mesh) -> int:
  return mesh.shape["data"] * mesh.shape["fsdp"]


def check_divisible(mesh: Mesh, size: int, key: str) -> None:
  """Batch sizes must split evenly over the data-parallel devices."""
  n = data_parallel_size(mesh)
  if size % n:
    raise ConfigError(f"'{key}'={size} is not divisible by the {n} data-parallel devices; use a "
                      f"multiple of {n}")


def check_env_batches(config: Any, mesh: Mesh) -> None:
  """For RL trainers: the training and evaluation env batches (``config.num_envs``,
  ``config.eval.num_envs``) are split over the data-parallel devices, so both must divide."""
  check_divisible(mesh, config.num_envs, "config.num_envs")
  check_divisible(mesh, config.eval.num_envs, "config.eval.num_envs")


def shard_batch(tree: Any, mesh: Mesh, batch_axis: int = 0) -> Any:
  """Places every array leaf of a batched pytree with ``batch_axis`` split over the devices.

  Apply it to what is batched (env states, observations), not to parameters. Leaves with no
  ``batch_axis`` (scalars) are replicated.
  """

  def place(x):
    x = jax.numpy.asarray(x)
    if x.ndim > batch_axis:
      return jax.device_put(x, batch_sharding(mesh, batch_axis))
    return jax.device_put(x, replicated(mesh))

  return jax.tree.map(place, tree)


def place_state(state: Any, mesh: Mesh, batched: dict[str, int]) -> Any:
  """Places a trainer state: the fields named in ``batched`` (dotted paths into nested
  ``flax.struct`` dataclasses, e.g. ``"replay.data"``) split on their axis over the data
  devices, everything else replicated. A field that is None (an option that is off) is skipped.

  Example: ``place_state(state, mesh, {"env_state": 1})`` for a seed-batched RL state whose env
  batch is axis 1.
  """
  split = {}
  for path, axis in batched.items():
    head, _, rest = path.partition(".")
    split.setdefault(head, {})[rest] = axis
  fields = {}
  for head, inner in split.items():
    value = getattr(state, head)
    if value is None:
      continue
    if "" in inner:
      fields[head] = shard_batch(value, mesh, inner[""])
    else:
      fields[head] = place_state(value, mesh, inner)
  rest = jax.tree.map(lambda x: jax.device_put(x, replicated(mesh)),
                      state.replace(**{k: None for k in fields}))
  return rest.replace(**fields)


def gather(tree: Any) -> Any:
  """Copies a (possibly sharded) pytree to host numpy arrays."""
  return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), tree)
