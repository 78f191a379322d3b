"""The host-side training loop shared by every chunked trainer (PPO, SAC, PQN, ...).

A trainer provides pure, single-seed functions and this loop does the rest:

* ``trainer.init(key) -> state`` and ``trainer.chunk(state) -> (state, metrics)``, where a chunk
  is ``config.log_every`` updates compiled as one ``lax.scan``;
* ``trainer.evaluate(state, key) -> metrics`` (optional, every ``config.eval.every`` updates);
* ``trainer.shard(state, mesh) -> state`` placing a seed-batched state on the mesh;
* ``trainer.num_updates`` and ``trainer.steps_per_update``.

The loop vmaps them over ``config.num_seeds``, then between chunks writes metrics, shows
progress, evaluates and checkpoints. A workdir holding checkpoints is resumed from the newest
one; the metrics written after that checkpoint are dropped first, so the resumed run's log and
final state equal an uninterrupted run's.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Protocol

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh

from jaxlab.core import batching
from jaxlab.core import config as config_lib
from jaxlab.core import prng
from jaxlab.core.checkpoint import Checkpointer
from jaxlab.core.errors import ConfigError, JaxlabError, WorkdirError
from jaxlab.core import plotting
from jaxlab.core.metrics import MetricWriter, Progress, read_metrics


class NonFiniteError(JaxlabError):
  """A loss became NaN or infinite; the message names the update, metric and checkpoint."""


class ChunkedTrainer(Protocol):
  num_updates: int
  steps_per_update: int

  def init(self, key: jax.Array) -> Any: ...

  def chunk(self, state: Any) -> tuple[Any, dict]: ...

  def evaluate(self, state: Any, key: jax.Array) -> dict: ...

  def shard(self, state: Any, mesh: Mesh) -> Any: ...


def prepare_workdir(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Creates ``workdir`` and writes ``config.json``, or checks it against a resumed run's.

  Raises:
    WorkdirError: the directory cannot be created or written.
    ConfigError: the workdir belongs to a run with a different config (nothing is changed).
  """
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, ".write_test")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as err:
    raise WorkdirError(f"workdir '{workdir}' is not writable: {err.strerror or err}") from None
  path = os.path.join(workdir, "config.json")
  new = json.loads(config_lib.to_json(config))
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f)
    diff = sorted(_diff_keys(old, new))
    if diff:
      raise ConfigError(f"workdir '{workdir}' holds a run with a different config (keys differ: "
                        f"{', '.join(diff[:8])}); use a new --workdir or the same config to "
                        f"resume")
    return
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.write(config_lib.to_json(config))
  os.replace(tmp, path)


def _diff_keys(old: dict, new: dict, prefix: str = "config") -> list[str]:
  out = []
  for key in set(old) | set(new):
    a, b = old.get(key, "<missing>"), new.get(key, "<missing>")
    if isinstance(a, dict) and isinstance(b, dict):
      out += _diff_keys(a, b, f"{prefix}.{key}")
    elif a != b:
      out.append(f"{prefix}.{key}")
  return out


def init_seeds(trainer: ChunkedTrainer, keys: jax.Array) -> Any:
  """``trainer.init`` for each key, stacked on a leading seed axis.

  One seed at a time (``jaxlab.core.batching.sequential``): batched QR decompositions
  (orthogonal initialisers under vmap) were seen to deadlock XLA:CPU here, and init runs once,
  so its sequential cost is nil.
  """
  return jax.jit(jax.vmap(batching.sequential(trainer.init)))(keys)


def over_seeds(fn: Callable[..., Any], num_seeds: int) -> Callable[..., Any]:
  """``jax.vmap(fn)`` over the leading seed axis; with one seed, ``fn`` on the squeezed axis.

  Same inputs and outputs either way (the seed axis stays in the state and the metrics), but
  a size-1 vmap is not free on XLA:CPU: batched matmuls with a batch of one took ~1.8x the
  time of plain ones in the SAC update (benchmarks/sac_vs_brax.py), so single-seed runs skip it.
  """
  if num_seeds > 1:
    return jax.vmap(fn)

  def single(*args):
    out = fn(*jax.tree.map(lambda x: x[0], args))
    return jax.tree.map(lambda x: jnp.asarray(x)[None], out)

  return single


def _check_finite(metrics: dict, update: int, last_ckpt: int | None, workdir: str) -> None:
  for name, value in metrics.items():
    if name.startswith("loss/") and not np.all(np.isfinite(value)):
      where = (f"{os.path.join(workdir, 'checkpoints', str(last_ckpt))}" if last_ckpt is not None
               else "none (no checkpoint was written yet)")
      raise NonFiniteError(f"non-finite '{name}'={np.asarray(value).tolist()} at update {update};"
                           f" last good checkpoint: {where}")


def run(trainer: ChunkedTrainer, config: ml_collections.ConfigDict, workdir: str,
        mesh: Mesh, progress: bool = True) -> tuple[Any, dict]:
  """Trains (or resumes) to ``trainer.num_updates``; returns the final state and last metrics."""
  prepare_workdir(workdir, config)
  log_every = config.log_every
  keys = prng.seed_keys(config.seed, config.num_seeds)
  state = trainer.shard(init_seeds(trainer, keys), mesh)

  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), every=config.checkpoint.every or
                      trainer.num_updates, keep=config.checkpoint.keep)
  start, record = 0, {}
  if ckpt.latest_step() is not None:
    state, record, start = ckpt.restore(state)
    if start % log_every:
      raise ConfigError(f"checkpoint at update {start} is not at a multiple of "
                        f"'config.log_every'={log_every}; resume with the original log_every")
  writer = MetricWriter(workdir, purge_step=start + 1 if start else None)
  writer.truncate(start)

  chunk = jax.jit(over_seeds(trainer.chunk, config.num_seeds), donate_argnums=0)
  evaluate = jax.jit(over_seeds(trainer.evaluate, config.num_seeds))
  eval_root = jax.random.fold_in(prng.seed_key(config.seed), 0x5EED)
  target = config.get("target_return")
  bar = Progress(trainer.num_updates * trainer.steps_per_update,
                 start=start * trainer.steps_per_update, unit="env steps") if progress else None
  elapsed = float(record.get("elapsed", 0.0))
  t_last = time.perf_counter()
  metrics: dict = {}
  shown: dict = {}
  for update in range(start + log_every, trainer.num_updates + 1, log_every):
    state, metrics = chunk(state)
    metrics = jax.device_get(metrics)
    _check_finite(metrics, update, ckpt.latest_step(), workdir)
    last = update == trainer.num_updates
    if config.eval.every and (update % config.eval.every == 0 or last):
      eval_keys = jax.random.split(jax.random.fold_in(eval_root, update), config.num_seeds)
      metrics.update(jax.device_get(evaluate(state, eval_keys)))
    now = time.perf_counter()
    elapsed += now - t_last
    t_last = now
    env_steps = update * trainer.steps_per_update
    metrics["env_steps"] = env_steps
    metrics["time/elapsed_s"] = elapsed
    if (target is not None and "first_target_update" not in record
        and "eval/episode_return" in metrics
        and float(np.mean(metrics["eval/episode_return"])) >= target):
      record["first_target_update"] = update
      record["first_target_env_steps"] = env_steps
      record["first_target_elapsed_s"] = elapsed
    writer.write(update, metrics)
    if bar is not None:
      for k in ("train/episode_return", "eval/episode_return"):
        if k in metrics and np.all(np.isfinite(metrics[k])):
          shown[k] = metrics[k]  # the latest finite value; NaN = no episode ended this chunk
      bar.update(env_steps, shown, force=last)
    record["elapsed"] = elapsed
    ckpt.save(update, state, dict(record), force=last)
  if bar is not None:
    bar.close()
  ckpt.close()
  writer.close()
  summary = dict(record, final_update=trainer.num_updates,
                 final_env_steps=trainer.num_updates * trainer.steps_per_update,
                 **{k: float(np.mean(v)) for k, v in metrics.items() if np.size(v)})
  with open(os.path.join(workdir, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2, default=float)
  plotting.plot_runs({os.path.basename(os.path.normpath(workdir)): read_metrics(workdir)},
                     ["eval/episode_return", "train/episode_return"],
                     os.path.join(workdir, "plots"))
  return state, metrics
