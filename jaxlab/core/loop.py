"""The run loop: what every training run does around its compiled step, in one place.

A trainer (``ppo``, ``pqn``, ``sac``, ``td3``, ``ns_supervised``, ``llm_sft``, ``llm_rl``, and
the ones to come) is declared by a :class:`Trainer`: its default config, its own config rules,
its mesh rules and ``build(config, workdir, mesh) -> Run``. A :class:`Run` holds the compiled
pieces of one run and exposes five things: the initial state, a chunk of training steps, an
evaluation, the final exports, and a few names (progress, plots, target). Everything else is
here and nowhere else:

1. the workdir and its ``config.json`` (a run with a different config is refused; nothing is
   written before the trainer has built its data, envs and models without error);
2. resume: the newest complete checkpoint is restored; a corrupt newest one is moved aside
   to ``checkpoints_corrupt/`` with one warning line and the previous one is used;
3. ``metrics.jsonl`` and TensorBoard, truncated to the restored step;
4. chunks of ``config.log_every`` steps: train, stop on a non-finite loss (naming the step,
   the metric and the last good checkpoint), evaluate every ``config.eval.every`` steps and at
   the end, write metrics, show progress with an ETA, checkpoint every
   ``config.checkpoint.every`` steps and at the end (keeping ``config.checkpoint.keep``);
5. the run's exports, ``summary.json`` and the plots.
6. ``starts.jsonl``: one line per start or resume (the step it starts from, the time, the git
   commit of the code and whether it had uncommitted changes, the versions of Python, jax,
   jaxlib, flax, optax and orbax, the devices, the command line), so a run resumed under other
   code says which steps ran under which.

Under several processes (``launch.train --multihost``) every process runs this same loop on its
part of the global mesh: checkpoints are saved and restored by all of them together (orbax
writes each array once), and only process 0 writes ``config.json``, the metrics, TensorBoard,
``summary.json`` and the plots, and shows progress, so a run has one copy of every file.

The keys every trainer shares (``trainer``, ``seed``, ``num_seeds``, ``log_every``,
``eval.every``, ``checkpoint.every`` / ``keep``, ``mesh``) are declared by :func:`base_config`
and checked by :func:`check_common`; :func:`validate` runs every check of a config once.

Importing this module does not import matplotlib (the plots are drawn at the end of a run).
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import os
import subprocess
import sys
import time
from typing import Any, Callable, Mapping, Protocol, Sequence

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from jaxlab.core import config as config_lib
from jaxlab.core import files
from jaxlab.core import mesh as mesh_lib
from jaxlab.core.checkpoint import Checkpointer
from jaxlab.core.errors import CheckpointError, ConfigError, JaxlabError, WorkdirError
from jaxlab.core.metrics import MetricWriter, Progress, read_metrics


class NonFiniteError(JaxlabError):
  """A loss became NaN or infinite; the message names the step, the metric and the last good
  checkpoint."""


class Run(Protocol):
  """One run of a trainer, as the loop drives it (built by ``Trainer.build``).

  Attributes:
    total_steps: steps (updates) of the whole run; the loop counts, logs and checkpoints in
      these.
    units_per_step: env steps (or samples) per step; the loop then logs ``env_steps`` and the
      progress bar counts them. None: the bar counts steps. An optional ``unit_name``
      attribute names them on the bar ("env steps" when absent or None, e.g. "samples").
    progress_keys: ``{label: metric}`` shown on the progress line (latest finite value).
    plot_keys: metrics drawn in ``workdir/plots`` at the end.
    target: ``(metric, value)``: the summary records the first step where the metric reaches
      the value (``first_target_step``, and ``first_target_env_steps`` / ``_elapsed_s``).
  """
  total_steps: int
  units_per_step: int | None
  progress_keys: Mapping[str, str]
  plot_keys: Sequence[str]
  target: tuple[str, float] | None

  def init(self) -> Any:
    """The initial state: a pytree of arrays, placed on the mesh (also the restore template)."""

  def train(self, state: Any, step: int, num_steps: int) -> tuple[Any, dict[str, Any]]:
    """``num_steps`` steps after ``step`` done; returns the new state and their metrics."""

  def evaluate(self, state: Any, step: int) -> dict[str, Any]:
    """Evaluation metrics of ``state`` after ``step`` steps."""

  def finish(self, state: Any, metrics: dict[str, Any]) -> dict[str, Any]:
    """Final exports (e.g. a Hugging Face model dir); returns extra summary entries.

    Under several processes only process 0 calls it, with the arrays it cannot read whole
    (split over processes) already gathered to numpy; it must not use collectives."""


def _no_mesh_rules(config: ml_collections.ConfigDict, mesh: Mesh) -> None:
  del config, mesh


@dataclasses.dataclass(frozen=True)
class Trainer:
  """The contract every trainer declares (``config.trainer`` names one in ``jaxlab.trainers``).

  Attributes:
    name: the value of ``config.trainer``.
    default_config: every key an experiment may set, with defaults (start from
      :func:`base_config`).
    check_config: the trainer's own rules; each failure raises ``ConfigError`` naming the key.
      The shared keys are checked by :func:`check_common`, not here.
    build: ``(config, workdir, mesh) -> Run``: loads data, models and envs (the workdir holds
      run-owned inputs such as a trained tokenizer).
    check_mesh: rules that need the device mesh (batches divisible by the devices).
    vmaps_seeds: ``config.num_seeds > 1`` trains that many seeds in one program; otherwise a run
      is one seed and ``num_seeds`` must be 1.
    evaluators: names in ``jaxlab.evals`` that ``launch.eval`` runs on a finished run.
  """
  name: str
  default_config: Callable[[], ml_collections.ConfigDict]
  check_config: Callable[[ml_collections.ConfigDict], None]
  build: Callable[[ml_collections.ConfigDict, str, Mesh], Run]
  check_mesh: Callable[[ml_collections.ConfigDict, Mesh], None] = _no_mesh_rules
  vmaps_seeds: bool = False
  evaluators: tuple[str, ...] = ()


# -- the shared keys ------------------------------------------------------------------------------


def base_config(trainer: str, *, log_every: int, eval_every: int, checkpoint_every: int,
                checkpoint_keep: int) -> ml_collections.ConfigDict:
  """The keys every trainer shares, with this trainer's defaults.

  ``eval.every`` and ``checkpoint.every`` count steps and must be multiples of ``log_every``;
  0 means only at the end of the run. Trainers add their own keys to the groups (e.g.
  ``eval.num_envs``).
  """
  c = ml_collections.ConfigDict()
  c.trainer = trainer
  c.seed = 0
  c.num_seeds = 1  # > 1: seeds trained side by side in one program (trainers that vmap)
  c.log_every = log_every  # steps per logged chunk
  c.eval = ml_collections.ConfigDict(dict(every=eval_every))
  c.checkpoint = ml_collections.ConfigDict(dict(every=checkpoint_every, keep=checkpoint_keep))
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  return c


def check_common(c: ml_collections.ConfigDict, trainer: Trainer) -> None:
  """The rules of the shared keys; each failure names its key."""
  require = config_lib.require
  require(c.log_every >= 1, f"'config.log_every' must be >= 1, got {c.log_every}")
  require(c.num_seeds >= 1, f"'config.num_seeds' must be >= 1, got {c.num_seeds}")
  require(trainer.vmaps_seeds or c.num_seeds == 1,
          f"'config.num_seeds'={c.num_seeds}: the {trainer.name} trainer trains one seed per "
          "run; start one run per seed with --config.seed=N")
  for key in ("eval.every", "checkpoint.every"):
    group, name = key.split(".")
    every = c[group][name]
    require(every >= 0 and every % c.log_every == 0,
            f"'config.{key}'={every} must be a multiple of config.log_every={c.log_every}")
  require(c.checkpoint.keep >= 1, f"'config.checkpoint.keep' must be >= 1, got "
          f"{c.checkpoint.keep}")


def validate(trainer: Trainer, config: ml_collections.ConfigDict) -> None:
  """Every check of ``config``, once: its shape against the defaults, the shared keys, then
  the trainer's own rules. Raises ``ConfigError`` naming the key."""
  config_lib.check_against_defaults(config, trainer.default_config())
  check_common(config, trainer)
  trainer.check_config(config)


# -- workdir and checkpoints ----------------------------------------------------------------------


def check_workdir(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Checks, writing nothing, that ``workdir`` can hold this run: it (or the directory it
  will be created in) is writable, and a ``config.json`` already there is this config's.

  Raises:
    WorkdirError: the directory cannot be created or written.
    ConfigError: the workdir belongs to a run with a different config.
  """
  probe = os.path.abspath(workdir)
  while not os.path.exists(probe):
    probe = os.path.dirname(probe)
  if not os.path.isdir(probe):
    raise WorkdirError(f"workdir '{workdir}' is not writable: {probe} is not a directory")
  if not os.access(probe, os.W_OK | os.X_OK):
    raise WorkdirError(f"workdir '{workdir}' is not writable: no write permission on {probe}")
  path = os.path.join(workdir, "config.json")
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f)
    diff = sorted(_diff_keys(old, json.loads(config_lib.to_json(config))))
    if diff:
      raise ConfigError(f"workdir '{workdir}' holds a run with a different config (keys differ: "
                        f"{', '.join(diff[:8])}); use a new --workdir or the same config to "
                        f"resume")


def prepare_workdir(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Creates ``workdir`` and writes ``config.json`` (after :func:`check_workdir`).

  Raises:
    WorkdirError / ConfigError: as :func:`check_workdir`.
  """
  check_workdir(workdir, config)
  path = os.path.join(workdir, "config.json")
  if os.path.exists(path):
    return
  try:
    files.write_text(path, config_lib.to_json(config))
  except OSError as err:
    raise WorkdirError(f"workdir '{workdir}' is not writable: {err.strerror or err}") from None


STARTS_FILE = "starts.jsonl"
# The checkout this module runs from (its commit is recorded with every run start).
_CHECKOUT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@functools.lru_cache(maxsize=None)
def code_version() -> dict[str, Any]:
  """The git commit of this jaxlab checkout (None outside a git checkout or without git) and
  whether tracked files differ from it, plus the versions of the packages a result depends on."""
  from importlib import metadata  # pylint: disable=import-outside-toplevel
  commit = dirty = None
  try:
    out = subprocess.run(["git", "-C", _CHECKOUT, "rev-parse", "HEAD"], capture_output=True,
                         text=True, timeout=10)
    if out.returncode == 0:
      commit = out.stdout.strip()
      status = subprocess.run(["git", "-C", _CHECKOUT, "status", "--porcelain",
                               "--untracked-files=no"], capture_output=True, text=True,
                              timeout=30)
      dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
  except (OSError, subprocess.SubprocessError):
    pass
  versions = {"python": sys.version.split()[0]}
  for name in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint"):
    try:
      versions[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      versions[name] = None
  return {"commit": commit, "uncommitted_changes": dirty, "versions": versions}


def record_start(workdir: str, step: int) -> None:
  """Appends this start (or resume) of the run to ``workdir/starts.jsonl`` (process 0)."""
  devices = jax.devices()
  files.append_jsonl(os.path.join(workdir, STARTS_FILE), [{
      "step": int(step),
      "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      **code_version(),
      "devices": f"{len(devices)} x {devices[0].device_kind}",
      "processes": jax.process_count(),
      "argv": _portable_argv(),
  }])


def _portable_argv() -> list[str]:
  """``sys.argv`` with the script's path made relative to the checkout when it lies inside it
  (``python -m launch.train`` puts the absolute path of launch/train.py there), so that a run
  record committed with a study names no directory of the machine that ran it."""
  argv = list(sys.argv)
  if argv and os.path.isabs(argv[0]):
    relative = os.path.relpath(argv[0], _CHECKOUT)
    if not relative.startswith(os.pardir):
      argv[0] = relative
  return argv


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """The ``config.json`` of a run directory (:func:`files.read_run_config`) as a ConfigDict."""
  return ml_collections.ConfigDict(files.read_run_config(workdir))


def _diff_keys(old: dict, new: dict, prefix: str = "config") -> list[str]:
  out = []
  for key in set(old) | set(new):
    a, b = old.get(key, "<missing>"), new.get(key, "<missing>")
    if isinstance(a, dict) and isinstance(b, dict):
      out += _diff_keys(a, b, f"{prefix}.{key}")
    elif a != b:
      out.append(f"{prefix}.{key}")
  return out


def checkpointer(workdir: str, config: ml_collections.ConfigDict, total_steps: int
                 ) -> Checkpointer:
  """The run's checkpoint manager: every ``checkpoint.every`` steps (0: the end only)."""
  return Checkpointer(os.path.join(workdir, "checkpoints"),
                      every=config.checkpoint.every or total_steps, keep=config.checkpoint.keep)


def restore_newest(ckpt: Checkpointer, like: Any, workdir: str, *, move_aside: bool = True
                   ) -> tuple[Any, dict, int]:
  """``(state, record, step)`` from the newest checkpoint that restores, or ``(like, {}, 0)``.

  A newer checkpoint that cannot be restored (a crash while the disk was failing, a damaged
  file) is skipped with one warning line and the previous one is used. With ``move_aside``
  (training: the run will write that step again) it is moved to
  ``workdir/checkpoints_corrupt/<step>``, kept for inspection, never deleted.

  Raises:
    CheckpointError: no checkpoint restores; the first (newest) failure is named and nothing
      is moved.
  """
  steps = sorted(ckpt.all_steps(), reverse=True)
  if not steps:
    return like, {}, 0
  failures: list[tuple[int, CheckpointError]] = []
  for step in steps:
    try:
      state, record, _ = ckpt.restore(like, step)
    except CheckpointError as err:
      failures.append((step, err))
      continue
    if failures:
      names = ", ".join(str(s) for s, _ in failures)
      where = "skipped"
      if move_aside:
        aside = os.path.join(workdir, "checkpoints_corrupt")
        mesh_lib.barrier("jaxlab_restore_failed")  # every process has tried before one is moved
        for bad, _ in failures:
          ckpt.move_aside(bad, aside, mesh_lib.is_primary())
        where = f"moved to {aside}"
      cause = getattr(failures[0][1], "cause", failures[0][1])
      if mesh_lib.is_primary():
        print(f"warning: checkpoint(s) {names} in {ckpt.directory} could not be restored "
              f"({cause}); {where}; using step {step}", file=sys.stderr, flush=True)
    return state, record, step
  ckpt.close()
  raise failures[0][1]


def check_finite(metrics: Mapping[str, Any], first: int, step: int, last_ckpt: int | None,
                 workdir: str) -> None:
  """Raises :class:`NonFiniteError` if a loss metric (``loss/*``, ``train/loss``) of the steps
  ``first + 1 .. step`` is NaN or infinite."""
  for name, value in metrics.items():
    if not (name.startswith("loss/") or name == "train/loss"):
      continue
    if np.all(np.isfinite(value)):
      continue
    where = (os.path.join(workdir, "checkpoints", str(last_ckpt)) if last_ckpt is not None
             else "none (no checkpoint was written yet)")
    span = f" (logged over steps {first + 1}-{step})" if step - first > 1 else ""
    raise NonFiniteError(f"non-finite '{name}'={np.asarray(value).tolist()} at step {step}"
                         f"{span}; last good checkpoint: {where}")


# -- the loop -------------------------------------------------------------------------------------


def _due(every: int, step: int, last: bool) -> bool:
  return last or (every > 0 and step % every == 0)


def run(trainer: Trainer, config: ml_collections.ConfigDict, workdir: str, mesh: Mesh, *,
        progress: bool = True, stop_at: int | None = None) -> dict[str, Any]:
  """Trains (or resumes) a validated ``config`` to the end; returns the summary.

  Args:
    trainer: the trainer named by ``config.trainer``.
    config: a config that passed :func:`validate` (and ``trainer.check_mesh``).
    workdir: the run directory (created); the same call resumes from its newest checkpoint.
    mesh: the device mesh.
    progress: show the console progress line.
    stop_at: stop after logging this step, as if the process were killed there (tests of
      resume): checkpoints up to it exist, no exports or summary are written, and the
      returned dict is ``{"stopped_at": step}``.
  """
  check_workdir(workdir, config)
  r = trainer.build(config, workdir, mesh)  # bad data or envs fail here, before any write
  primary = mesh_lib.is_primary()
  if primary:
    prepare_workdir(workdir, config)
  total, log_every = r.total_steps, config.log_every
  ckpt = checkpointer(workdir, config, total)
  state, record, start = restore_newest(ckpt, r.init(), workdir)
  if start % log_every and start != total:
    ckpt.close()
    raise ConfigError(f"checkpoint at step {start} is not at a multiple of "
                      f"'config.log_every'={log_every}; resume with the original log_every")
  writer = MetricWriter(workdir, purge_step=start + 1 if start else None) if primary else None
  if primary:
    record_start(workdir, start)
  if writer is not None:
    writer.truncate(start)
  units = r.units_per_step or 1
  bar = (Progress(total * units, start=start * units,
                  unit=((getattr(r, "unit_name", None) or "env steps") if r.units_per_step
                        else "steps"))
         if progress and primary else None)
  elapsed = float(record.get("elapsed", 0.0))
  t_last = time.perf_counter()
  metrics: dict[str, Any] = {}
  shown: dict[str, Any] = {}
  step = start
  try:
    for first in range(start, total, log_every):
      step = min(first + log_every, total)
      last = step == total
      state, metrics = r.train(state, first, step - first)
      metrics = dict(mesh_lib.gather(metrics))
      check_finite(metrics, first, step, ckpt.latest_step(), workdir)
      if _due(config.eval.every, step, last):
        metrics.update(mesh_lib.gather(r.evaluate(state, step)))
      now = time.perf_counter()
      elapsed += now - t_last
      t_last = now
      if r.units_per_step:
        metrics["env_steps"] = step * r.units_per_step
      metrics["time/elapsed_s"] = elapsed
      _record_target(r.target, record, metrics, step, elapsed)
      if writer is not None:
        writer.write(step, metrics)
      if bar is not None:
        for label, key in r.progress_keys.items():
          if key in metrics and np.all(np.isfinite(metrics[key])):
            shown[label] = metrics[key]  # the latest finite value (NaN: no episode ended)
        bar.update(step * units, shown, force=last)
      record["elapsed"] = elapsed
      ckpt.save(step, state, dict(record), force=last)
      if stop_at is not None and step >= stop_at and not last:
        return {"stopped_at": step}
  finally:
    if bar is not None:
      bar.close()
    ckpt.close()
    if writer is not None:
      writer.close()

  if not metrics:  # a finished run resumed: nothing trained, score it once more
    metrics = dict(mesh_lib.gather(r.evaluate(state, total)))
  summary = dict(record, final_step=total)
  if r.units_per_step:
    summary["final_env_steps"] = total * r.units_per_step
  summary.update({k: _summary_value(v) for k, v in metrics.items()})
  if jax.process_count() > 1:
    # The exports are files, written once: by process 0, from arrays it can read whole.
    state = _readable_on_every_process(state)
    if not primary:
      return summary
  summary.update(r.finish(state, metrics))
  files.write_json(os.path.join(workdir, "summary.json"), summary, indent=2)
  if r.plot_keys:
    from jaxlab.core import plotting  # pylint: disable=import-outside-toplevel
    plotting.plot_runs({os.path.basename(os.path.normpath(workdir)): read_metrics(workdir)},
                       r.plot_keys, os.path.join(workdir, "plots"),
                       x_key="env_steps" if r.units_per_step else "step")
  return summary


def _readable_on_every_process(tree: Any) -> Any:
  """``tree`` with each array split over several processes gathered to host numpy (a
  collective); arrays each process can read whole already are kept as they are."""
  return jax.tree.map(lambda x: mesh_lib.gather(x) if mesh_lib.spans_processes(x) else x, tree)


def _summary_value(value: Any) -> Any:
  """One number per metric (the mean over seeds of a per-seed value); strings stay."""
  if isinstance(value, str):
    return value
  return float(np.mean(value)) if np.size(value) else float("nan")


def _record_target(target, record: dict, metrics: dict, step: int, elapsed: float) -> None:
  if target is None or target[1] is None or "first_target_step" in record:
    return
  key, value = target
  if key in metrics and float(np.mean(metrics[key])) >= value:
    record["first_target_step"] = step
    if "env_steps" in metrics:
      record["first_target_env_steps"] = int(metrics["env_steps"])
    record["first_target_elapsed_s"] = elapsed


def restore_run(trainer: Trainer, config: ml_collections.ConfigDict, workdir: str, mesh: Mesh
                ) -> tuple[Run, Any, int]:
  """``(run, state, step)`` of a run directory's newest checkpoint, for evaluation.

  Raises:
    CheckpointError: the run has no checkpoint yet, or none restores.
  """
  r = trainer.build(config, workdir, mesh)
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), every=1)
  try:
    if not ckpt.all_steps():
      raise CheckpointError(f"{ckpt.directory} holds no checkpoint yet; train first (the same "
                            "launch.train command resumes)")
    state, _, step = restore_newest(ckpt, r.init(), workdir, move_aside=False)
  finally:
    ckpt.close()
  return r, state, step
