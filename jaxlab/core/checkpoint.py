"""Atomic, resumable checkpoints of a whole training state (an orbax CheckpointManager).

Under several processes every process calls :meth:`Checkpointer.save` and
:meth:`Checkpointer.restore` with the same step (a collective): orbax writes each array once,
from the processes that hold its shards, and process 0 finishes the step's directory; a restore
reads back each process's shards of the template's global shardings.

A checkpoint holds the trainer's state pytree (params, optimizer moments, env states, PRNG keys:
everything the next update reads) plus a small JSON record of host-side progress. orbax writes
each step into a temporary directory and renames it when complete, so a run killed at any moment
leaves only whole checkpoints behind; the same command then resumes from the newest one.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import threading
from typing import Any

import jax
import orbax.checkpoint as ocp

from jaxlab.core import mesh as mesh_lib
from jaxlab.core.errors import CheckpointError


# orbax splits the writing of a replicated array among its replicas ("replica-parallel"),
# slicing it on device first: one compiled slice per array shape and replica. That pays for
# large arrays replicated over many hosts, but for small ones it is only compilation (a tiny PPO
# run on 8 CPU devices compiled 40 slices at its first save). Below this many bytes per
# replica, one replica writes the whole array.
_MIN_BYTES_PER_REPLICA_SLICE = 4 * 2**20
_handler_registered = False


def _register_array_handler() -> None:
  global _handler_registered
  if _handler_registered:
    return
  absl_logger = logging.getLogger("absl")  # orbax warns that it overrides its own default
  level = absl_logger.level
  absl_logger.setLevel(logging.ERROR)
  try:
    ocp.type_handlers.register_type_handler(
        jax.Array, ocp.type_handlers.ArrayHandler(
            min_slice_bytes_for_replica_parallel=_MIN_BYTES_PER_REPLICA_SLICE), override=True)
  finally:
    absl_logger.setLevel(level)
  _handler_registered = True


def _storable(tree: Any) -> dict[str, jax.Array]:
  """The non-empty leaves of ``tree`` keyed by their path.

  orbax refuses zero-size arrays (MJX states hold some, e.g. ``act`` of actuator-free models)
  and numpy scalars; empty leaves carry no data, so they are rebuilt from the template on
  restore instead of being stored.
  """
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(path): jax.numpy.asarray(leaf) for path, leaf in leaves
          if jax.numpy.size(leaf) > 0}


def _unstorable(stored: dict[str, Any], like: Any) -> Any:
  """Inverse of :func:`_storable`, with ``like`` giving the structure and the empty leaves."""
  leaves, treedef = jax.tree_util.tree_flatten_with_path(like)
  out = [stored[jax.tree_util.keystr(path)] if jax.numpy.size(leaf) > 0 else leaf
         for path, leaf in leaves]
  return jax.tree_util.tree_unflatten(treedef, out)


def _is_closed_loop_noise(exc: BaseException | None) -> bool:
  return isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed"


def _drop_closed_loop_noise() -> None:
  """Installs (once) hooks that drop the tracebacks of orbax work finishing on a closed event
  loop, and asyncio's log lines about failed tasks nobody awaited; other errors pass through."""
  if getattr(sys.unraisablehook, "_jaxlab_filter", False):
    return
  unraisable, excepthook, thread_hook = sys.unraisablehook, sys.excepthook, threading.excepthook

  def on_unraisable(u):
    if not _is_closed_loop_noise(u.exc_value):
      unraisable(u)

  def on_exception(kind, value, tb):
    if not _is_closed_loop_noise(value):
      excepthook(kind, value, tb)

  def on_thread(args):
    if not _is_closed_loop_noise(args.exc_value):
      thread_hook(args)

  on_unraisable._jaxlab_filter = True  # pylint: disable=protected-access
  sys.unraisablehook, sys.excepthook, threading.excepthook = (on_unraisable, on_exception,
                                                              on_thread)
  logging.getLogger("asyncio").addFilter(
      lambda record: "exception was never retrieved" not in record.getMessage())


class Checkpointer:
  """Saves every ``every`` steps, keeps the newest ``keep``, restores the newest.

  Args:
    directory: where step directories go (created if missing).
    every: save when ``step % every == 0`` (and always when ``force=True``).
    keep: number of checkpoints kept on disk.
  """

  def __init__(self, directory: str, every: int, keep: int = 3):
    self.directory = os.path.abspath(directory)
    self.every = max(int(every), 1)
    self._options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                                 enable_async_checkpointing=True)
    _register_array_handler()
    self._open()

  def _open(self) -> None:
    try:
      self._manager = ocp.CheckpointManager(self.directory, options=self._options)
    except (OSError, PermissionError) as err:
      raise CheckpointError(f"cannot open checkpoint directory {self.directory}: {err}") from err

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, record: dict | None = None, force: bool = False) -> bool:
    """Starts an asynchronous save of ``state`` at ``step``; returns whether it saved."""
    if not force and step % self.every:
      return False
    if self.latest_step() == step:
      return False
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(_storable(state)), record=ocp.args.JsonSave(record or {})),
                       force=True)
    return True

  def all_steps(self) -> list[int]:
    """The steps of every complete checkpoint on disk, oldest first."""
    return sorted(self._manager.all_steps())

  def restore(self, like: Any, step: int | None = None) -> tuple[Any, dict, int]:
    """Restores ``(state, record, step)`` with the structure, shapes and shardings of ``like``.

    Raises:
      CheckpointError: naming the step directory, when it is unreadable or does not match
        (its ``cause`` attribute holds orbax's reason).
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise CheckpointError(f"no checkpoint in {self.directory}")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _storable(like))
    path = os.path.join(self.directory, str(step))
    # Before the read, not after a failure: tensorstore may complete a read of a damaged step
    # on orbax's event loop while that loop is already closing, and prints the error at once
    # (seen once in 1263-test CI runs: a traceback before the one warning line).
    _drop_closed_loop_noise()
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract), record=ocp.args.JsonRestore()))
    except Exception as err:  # orbax raises many types; the user needs the path and the cause.
      cause = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
      error = CheckpointError(
          f"checkpoint {path} cannot be restored ({type(err).__name__}: {cause}); it is corrupt "
          f"or from a different config. Move it aside to resume from an earlier step, or use a "
          f"new --workdir")
      error.cause = f"{type(err).__name__}: {cause}"
      self._discard_failed_restore()
      raise error from None
    return _unstorable(restored.state, like), dict(restored.record or {}), step

  def _discard_failed_restore(self) -> None:
    """After a failed restore, orbax's manager still has reads in flight whose completions
    arrive on an event loop that is already closed; each would print a traceback ("Event loop
    is closed", "Task exception was never retrieved") long after the one warning line that
    says what happened. Those two messages are dropped (:meth:`restore` installs the filter;
    nothing else is dropped), the failed tasks are collected, and a fresh manager is opened."""
    try:
      self.close()
    except Exception:  # pylint: disable=broad-except
      pass
    gc.collect()
    self._open()

  def move_aside(self, step: int, directory: str, mover: bool = True) -> str:
    """Moves checkpoint ``step`` out of the managed directory into ``directory/<step>`` (a
    suffix is added if that exists) and forgets it; returns the new path. Nothing is deleted.

    Under several processes every process calls this; only the ``mover`` (process 0) renames,
    the others wait for it before forgetting the step.
    """
    self.wait()
    dest = os.path.join(directory, str(step))
    if mover:
      os.makedirs(directory, exist_ok=True)
      n = 1
      while os.path.exists(dest):
        dest = os.path.join(directory, f"{step}.{n}")
        n += 1
      os.replace(os.path.join(self.directory, str(step)), dest)
    mesh_lib.barrier(f"jaxlab_move_aside_{step}")
    self._manager.reload()
    return dest

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
