"""Device meshes and shardings: one code path for 1 to N devices.

A mesh has up to three named axes: ``data`` (the env / prompt batch), ``fsdp`` (parameters
split across data-parallel workers) and ``tensor`` (tensor parallelism). Arrays follow their
data: a trainer places its state with :func:`shard_batch` once, and jit propagates the rest.

Several processes (a TPU pod, a GPU cluster, or ``launch.local_cluster`` on one machine) join
one job through :func:`initialize_distributed`; the mesh then spans every process's devices and
the same code runs in each. Values computed identically on every process (initial states, PRNG
keys) are placed with ``jax.device_put`` onto the global mesh, so results do not depend on how
many processes share the devices; :func:`gather` brings global arrays back to every host.
"""

from __future__ import annotations

import hashlib
import os
import time
import warnings
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxlab.core.errors import ConfigError
from jaxlab.core.ports import ENV_ADDRESS, ENV_ID, ENV_NUM, check_port_free

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
  """Batch sizes must split evenly over the data-parallel devices (of every process)."""
  n = data_parallel_size(mesh)
  if size % n:
    where = ""
    if jax.process_count() > 1:
      where = (f" ({jax.process_count()} processes x {jax.local_device_count()} local devices"
               f"{'' if n == jax.device_count() else ', over fsdp*tensor'})")
    raise ConfigError(f"'{key}'={size} is not divisible by the {n} data-parallel devices{where};"
                      f" use a multiple of {n}")


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
      return put(x, batch_sharding(mesh, batch_axis))
    return put(x, replicated(mesh))

  return jax.tree.map(place, tree)


def put(x: Any, sharding: NamedSharding) -> jax.Array:
  """``jax.device_put(x, sharding)`` for a value every process holds whole (computed the same
  way on each): under several processes each one hands over only its own devices' slices
  (no collective, nothing compiled)."""
  if (jax.process_count() == 1 or sharding.is_fully_addressable
      or (isinstance(x, jax.Array) and not x.is_fully_addressable)):  # already global
    return jax.device_put(x, sharding)
  host = np.asarray(x)
  return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def local_rows(sharding: NamedSharding, shape: Sequence[int]) -> np.ndarray:
  """The indices along axis 0 of a global array of ``shape`` (sorted) that this process's
  devices hold under ``sharding``: the only rows of a batch this process has to build. Every
  row with one process (or an axis 0 that is not split)."""
  shape = tuple(int(d) for d in shape)
  rows: set[int] = set()
  for index in sharding.addressable_devices_indices_map(shape).values():
    rows.update(range(shape[0])[index[0]] if index else range(shape[0]))
  return np.asarray(sorted(rows), np.int64)


def put_rows(local: Any, rows: np.ndarray, shape: Sequence[int],
             sharding: NamedSharding) -> jax.Array:
  """The global array of ``shape`` placed with ``sharding`` from this process's rows only:
  ``local[k]`` is global row ``rows[k]``, and ``rows`` must hold :func:`local_rows` (more is
  fine). Each process builds and hands over only its own devices' rows, so no process
  materialises the whole batch (and nothing is all-gathered); with every row it is
  :func:`put`."""
  local = np.asarray(local)
  shape = tuple(int(d) for d in shape)
  if len(rows) == shape[0] and np.array_equal(rows, np.arange(shape[0])):
    return put(local, sharding)
  where = {int(r): k for k, r in enumerate(rows)}

  def block(index):
    want = [where[r] for r in range(shape[0])[index[0]]]
    return local[want][(slice(None),) + tuple(index[1:])]

  return jax.make_array_from_callback(shape, sharding, block)


def allgather_host(x: Any) -> np.ndarray:
  """``[process_count, *x.shape]``: every process's host value ``x`` (same shape and dtype on
  each), on every process. A collective: every process calls it. Small values only (counts,
  indices); 64-bit values travel as 32-bit ones."""
  x = np.asarray(x)
  if jax.process_count() == 1:
    return x[None]
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  out = np.asarray(multihost_utils.process_allgather(x))
  return out.reshape((jax.process_count(),) + x.shape)


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
  rest = jax.tree.map(lambda x: put(x, replicated(mesh)),
                      state.replace(**{k: None for k in fields}))
  return rest.replace(**fields)


def spans_processes(x: Any) -> bool:
  """Whether ``x`` is a jax array that no single process can read whole (split over several
  processes, not replicated)."""
  return isinstance(x, jax.Array) and not (x.is_fully_addressable or x.is_fully_replicated)


def barrier(name: str) -> None:
  """Waits for every process of a multi-process job (nothing with one process)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    multihost_utils.sync_global_devices(name)


def gather(tree: Any) -> Any:
  """Copies a (possibly sharded) pytree's arrays to host numpy arrays, whole on every process;
  other leaves (Python numbers, strings) are kept as they are, as ``jax.device_get`` does.

  An array split over several processes is assembled with a collective, so under several
  processes every process must call this with the same tree.
  """

  def one(x):
    if spans_processes(x):
      from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    if isinstance(x, (jax.Array, np.ndarray, np.generic)):
      return np.asarray(jax.device_get(x))
    return x

  return jax.tree.map(one, tree)


# -- several processes ----------------------------------------------------------------------------

def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None) -> None:
  """Joins this process to a multi-process job (before any other JAX call).

  Arguments left None are read from ``JAXLAB_COORDINATOR_ADDRESS`` / ``JAXLAB_NUM_PROCESSES``
  / ``JAXLAB_PROCESS_ID`` (set by ``launch.local_cluster``); if none is set either, JAX finds
  the cluster itself (Cloud TPU, SLURM ``srun``, Open MPI). CPU devices exchange data through
  gloo, so several processes on one machine (or CPU hosts) work too.

  Raises:
    ConfigError: a setting is malformed, or process 0 cannot bind the coordinator's port.
  """
  env = os.environ
  address = coordinator_address or env.get(ENV_ADDRESS) or None
  try:
    num = num_processes if num_processes is not None else (
        int(env[ENV_NUM]) if env.get(ENV_NUM) else None)
    index = process_id if process_id is not None else (
        int(env[ENV_ID]) if env.get(ENV_ID) else None)
  except ValueError as err:
    raise ConfigError(f"{ENV_NUM} / {ENV_ID} must be integers ({err})") from None
  if address is not None and (num is None or index is None):
    raise ConfigError(f"coordinator address {address} given without the process count and this "
                      f"process's index (--num_processes/--process_id or {ENV_NUM}/{ENV_ID})")
  if num is not None and index is not None and not 0 <= index < num:
    raise ConfigError(f"process id {index} is not in [0, {num})")
  if address is not None:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
      raise ConfigError(f"coordinator address {address!r} is not HOST:PORT")
    if index == 0 and host in ("127.0.0.1", "localhost"):
      check_port_free(int(port), "127.0.0.1")
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=address, num_processes=num,
                             process_id=index)
  if (jax.process_count() > 1 and jax.devices()[0].platform == "cpu" and address is not None
      and address.rpartition(":")[0] in ("127.0.0.1", "localhost")):
    _compile_once_per_cpu_job()


def _compile_once_per_cpu_job() -> None:
  """CPU processes of one job on one machine (coordinator on the loopback address, as
  ``launch.local_cluster`` starts them) compile each program once (process 0) instead of once
  each.

  jax keys its persistent compilation cache partly on a fingerprint of the devices' topology,
  which on CPU differs from process to process (jax 0.10.2 and 0.11.2; on GPU jax already
  makes the key process-invariant), and only process 0 writes the cache: so process 1 missed
  the cache on every program, in every run, and compiled everything a second time (measured:
  a 2-process job's cache keys differ in that one part only). Here the topology part of the key
  hashes the device kinds instead (jax's own fallback for backends without a topology), so
  every process computes the same key, and jax's ``share_binary_between_hosts`` lets the
  processes after 0 wait for process 0's compiled program through the coordinator instead of
  compiling it. The program is the same SPMD program on every process (same HLO, same compile
  options, same global device assignment), so results are unchanged (tests/test_multihost.py
  compares them with a 1-process run). Only on one machine: processes on different hosts may
  have different CPUs, and a program compiled for one CPU's instruction set must not run on
  another. Private jax API: if a later jax renames it, this does nothing and each process
  compiles for itself, as before.

  The programs a process runs on its own devices alone (eager operations of initialisation,
  metrics, host transfers) are its own: their key names its devices, so no other process
  computes it. jax writes cache entries from process 0 only (against write contention on shared
  filesystems), so process 1 compiled its ~20 such programs again in every launch (4.3 s of
  CPU of a 2 x 4-device PPO resume on 2 cores, while process 0 waited for it at the first
  collective). Here each process writes those entries itself; no two processes write one key.
  """
  try:
    from jax._src import cache_key  # pylint: disable=import-outside-toplevel
    from jax._src import compiler  # pylint: disable=import-outside-toplevel
  except ImportError:
    return
  if not (callable(getattr(cache_key, "_hash_accelerator_config", None))
          and callable(getattr(cache_key, "_hash_devices", None))):
    return
  cache_key._hash_accelerator_config = cache_key._hash_devices  # pylint: disable=protected-access
  jax.config.update("jax_share_binary_between_hosts", True)
  _write_own_programs_to_cache(compiler)


def _write_own_programs_to_cache(compiler: Any) -> None:
  """On a process other than 0, wraps jax's compile-and-write-cache step (reached by programs
  that run on this process's devices only, once binaries are shared between processes) so that
  the compiled program is written to the persistent cache as process 0 would write it."""
  original = getattr(compiler, "_compile_and_write_cache", None)
  cache = getattr(compiler, "compilation_cache", None)
  if (jax.process_index() == 0 or not callable(original) or getattr(original, "_jaxlab", False)
      or not callable(getattr(cache, "put_executable_and_time", None))):
    return

  def compile_and_write(backend, computation, executable_devices, compile_options,
                        host_callbacks, module_name, key):
    start = time.monotonic()
    executable = original(backend, computation, executable_devices, compile_options,
                          host_callbacks, module_name, key)
    seconds = time.monotonic() - start
    if (not host_callbacks and cache.is_persistent_cache_enabled()
        and seconds >= jax.config.jax_persistent_cache_min_compile_time_secs):
      try:
        cache.put_executable_and_time(key, module_name, executable, backend, int(seconds))
      except Exception as err:  # pylint: disable=broad-except
        warnings.warn(f"not written to the compilation cache: {module_name} "
                      f"({type(err).__name__}: {err})")
    return executable

  compile_and_write._jaxlab = True  # pylint: disable=protected-access
  compiler._compile_and_write_cache = compile_and_write  # pylint: disable=protected-access


def is_primary() -> bool:
  """Whether this process writes the run's files (process 0; the only one without a job)."""
  return jax.process_index() == 0


def check_same_across_processes(text: str, what: str) -> None:
  """Every process of the job must pass the same ``text`` (e.g. its config as JSON); raises
  ``ConfigError`` on every process, naming the processes that differ from process 0. A
  collective: every process calls it. A single process always passes."""
  if jax.process_count() == 1:
    return
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  digest = np.frombuffer(hashlib.sha256(text.encode()).digest()[:8], dtype=np.int32)
  every = np.asarray(multihost_utils.process_allgather(digest)).reshape(jax.process_count(), -1)
  differ = [i for i in range(len(every)) if not np.array_equal(every[i], every[0])]
  if differ:
    raise ConfigError(f"{what} differs between processes: process(es) "
                      f"{', '.join(map(str, differ))} do not match process 0; every process must "
                      f"run the same command")
