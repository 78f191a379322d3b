"""Phase summary of non-stationary supervised runs (trainer ``ns_supervised``), per arm.

    python -m launch.ns_phases --workdir='runs/sg_digits/*'
    python -m launch.ns_phases --workdir=runs/ns_digits --out=runs/ns_digits_phases.md
    python -m launch.ns_phases --workdir=runs/ns_digits --baseline=sigreg=0, --last=5

``launch.analyze`` averages the last records of a run; label-shift benchmarks are read per
phase instead. For every arm (``<run>@<arm>``) and every seed this computes, from the records
written once per epoch:

* ``mean acc``: test accuracy averaged over all epochs;
* ``1st epoch after a shift``: test accuracy after the first epoch of phases 2..P, averaged over
  the P-1 shifts (how much is kept / relearned right after the labels are re-permuted);
* ``end of phase``: test accuracy at the last epoch of each of the P phases, averaged;
* ``last phase end``: test accuracy at the final epoch;
* ``dormant``, ``eff. rank``, ``|grad| 1st layer``: the health metrics averaged over all epochs
  (the first trunk layer is ``trunk/hidden/0`` in plain MLPs, ``trunk/input`` in multi-skip ones).

``--last=N`` averages ``mean acc`` and the health metrics over the last N epochs instead.
``--baseline=S`` adds a second table: for each other arm of the same run, the per-seed
differences to the arm whose name contains ``S`` (seed i minus seed i).

``--label=OLD:NEW`` renames an arm (``OLD`` is ``<run>@<arm>``); ``--export_diff=FILE`` writes
the ``--baseline`` differences to their own CSV (``--export`` then holds the arms alone);
``--export_phases=FILE`` writes the test accuracy at the end of each phase, one column per phase.

Each cell is the mean over seeds ± the half-width of a 95% Student-t interval
(``t_{0.975, n-1} * s / sqrt(n)``, ``jaxlab.core.stats``, as ``launch.analyze``). ``--export``
writes the per-seed values behind the table(s) as CSV; ``python -m launch.analyze --data=FILE``
prints the same tables from that file alone.
"""

from __future__ import annotations

import glob
import os

import numpy as np
from absl import flags

from jaxlab.core import stats
from launch import cli
from launch.cli import fail

_WORKDIR = flags.DEFINE_list("workdir", None, "Run directories (comma-separated; globs allowed).")
_OUT = flags.DEFINE_string("out", None, "Optional path of a markdown file for the table.")
_EXPORT = flags.DEFINE_string("export", None, "Write the per-seed values here (CSV).")
_LAST = flags.DEFINE_integer("last", 0, "Average 'mean acc' and the health metrics over the "
                             "last N epochs (0: all epochs).")
_BASELINE = flags.DEFINE_string("baseline", None, "Also print per-seed differences of each arm "
                                "to the arm of the same run whose name contains this string.")
_EXPORT_DIFF = flags.DEFINE_string("export_diff", None, "Write the per-seed --baseline "
                                   "differences here (CSV) instead of into --export.")
_EXPORT_PHASES = flags.DEFINE_string("export_phases", None, "Write the per-seed test accuracy "
                                     "at the end of each phase here (CSV).")
_LABEL = flags.DEFINE_multi_string("label", [], "Rename an arm: OLD:NEW (split at the first "
                                   "':'), OLD being '<run>@<arm>'.")
flags.mark_flag_as_required("workdir")

_FIRST_LAYER = ("health/grad_norm/trunk/hidden/0", "health/grad_norm/trunk/input")
COLUMNS = ("mean acc", "1st epoch after a shift", "end of phase", "last phase end", "dormant",
           "eff. rank", "|grad| 1st layer")


def _series(records: list[dict], key: str) -> np.ndarray | None:
  """``[epochs, seeds]`` values of ``key`` over the records that have it, or None."""
  rows = [np.asarray(r[key], dtype=np.float64).reshape(-1) for r in records if key in r]
  return np.stack(rows) if rows else None


def arm_summary(records: list[dict], arm: str, last: int = 0) -> dict[str, np.ndarray]:
  """Per-seed values of :data:`COLUMNS` for one arm of one run.

  Args:
    records: the run's metrics records (one per epoch).
    arm: the arm suffix, e.g. ``"sigreg=0.2,lr=0.001"``.
    last: average ``mean acc`` and the health metrics over the last ``last`` epochs (0: all).

  Returns:
    ``{column: [seeds]}``; columns whose metric was not logged are left out.
  """
  sfx = "@" + arm
  acc_records = [r for r in records if "test/accuracy" + sfx in r]
  acc = _series(acc_records, "test/accuracy" + sfx)
  phase = np.asarray([np.asarray(r["phase"]).reshape(-1)[0] for r in acc_records])
  phases = np.unique(phase)
  window = slice(-last, None) if last > 0 else slice(None)
  out = {
      "mean acc": acc[window].mean(0),
      "end of phase": np.mean([acc[phase == p][-1] for p in phases], axis=0),
      "last phase end": acc[-1],
  }
  if phases.size > 1:
    out["1st epoch after a shift"] = np.mean([acc[phase == p][0] for p in phases[1:]], axis=0)
  for column, key in (("dormant", "health/dormant_ratio"),
                      ("eff. rank", "health/effective_rank")):
    s = _series(records, key + sfx)
    if s is not None:
      out[column] = s[window].mean(0)
  for key in _FIRST_LAYER:
    s = _series(records, key + sfx)
    if s is not None:
      out["|grad| 1st layer"] = s[window].mean(0)
      break
  return out


def phase_ends(records: list[dict], arm: str) -> dict[str, np.ndarray]:
  """Per-seed test accuracy at the last epoch of each phase of one arm:
  ``{"end of phase <p>": [seeds]}`` for p = 1, 2, ... in order."""
  sfx = "@" + arm
  acc_records = [r for r in records if "test/accuracy" + sfx in r]
  acc = _series(acc_records, "test/accuracy" + sfx)
  phase = np.asarray([np.asarray(r["phase"]).reshape(-1)[0] for r in acc_records])
  return {f"end of phase {i + 1}": acc[phase == p][-1] for i, p in enumerate(np.unique(phase))}


def _seed_rows(label: str, run: str, summary: dict[str, np.ndarray],
               columns=COLUMNS) -> list[dict]:
  """One per-seed row per seed of an arm's summary (columns it lacks are NaN)."""
  n = len(next(iter(summary.values())))
  return [{"arm": label, "run": run, "seed": i,
           **{c: float(summary[c][i]) if c in summary else float("nan") for c in columns}}
          for i in range(n)]


def main(argv):
  del argv
  from jaxlab.core import metrics as metrics_lib  # pylint: disable=import-outside-toplevel

  workdirs = []
  for pattern in _WORKDIR.value:
    workdirs += [m for m in sorted(glob.glob(pattern)) if os.path.isdir(m)]
  workdirs = [w for w in workdirs if os.path.exists(os.path.join(w, "metrics.jsonl"))]
  if not workdirs:
    fail(f"no metrics.jsonl in {_WORKDIR.value}; pass ns_supervised run directories")
  try:
    renames = stats.parse_labels(_LABEL.value)
  except ValueError as err:
    fail(str(err))
  seen = set()
  rows, diff_rows, phase_rows, phase_columns = [], [], [], []
  for w in workdirs:
    records = metrics_lib.read_metrics(w)
    arms = sorted({k.split("@", 1)[1] for r in records for k in r
                   if k.startswith("test/accuracy@")})
    if not arms:
      fail(f"{w} has no 'test/accuracy@<arm>' records; not an ns_supervised run")
    name = os.path.basename(os.path.normpath(w))
    summaries = {arm: arm_summary(records, arm, _LAST.value) for arm in arms}
    label = {arm: renames.get(f"{name}@{arm}", f"{name}@{arm}") for arm in arms}
    seen.update(f"{name}@{arm}" for arm in arms)
    for arm, summary in summaries.items():
      rows += _seed_rows(label[arm], name, summary)
      if _EXPORT_PHASES.value:
        ends = phase_ends(records, arm)
        phase_columns += [c for c in ends if c not in phase_columns]
        phase_rows.append((label[arm], name, ends))
    if _BASELINE.value is not None:
      base = [arm for arm in arms if _BASELINE.value in arm]
      if len(base) != 1:
        fail(f"--baseline={_BASELINE.value!r} matches {len(base)} arms of {w} "
             f"({', '.join(arms)}); it must match exactly one")
      for arm in arms:
        if arm != base[0]:
          diff = {c: summaries[arm][c] - summaries[base[0]][c] for c in COLUMNS
                  if c in summaries[arm] and c in summaries[base[0]]}
          diff_label = (f"{label[arm]} − {label[base[0]]}" if renames
                        else f"{name}@{arm} − @{base[0]}")
          diff_rows += _seed_rows(diff_label, name, diff)
  unknown = sorted(set(renames) - seen)
  if unknown:
    fail(f"--label: no arm {', '.join(map(repr, unknown))}; the arms are {', '.join(sorted(seen))}")
  table = stats.seed_table(rows, COLUMNS)
  if diff_rows:
    table += "\n\n" + stats.seed_table(diff_rows, COLUMNS)
  print(table)
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      f.write(table + "\n")
  if _EXPORT.value:
    stats.write_seed_rows(_EXPORT.value, rows if _EXPORT_DIFF.value else rows + diff_rows, COLUMNS)
  if _EXPORT_DIFF.value:
    stats.write_seed_rows(_EXPORT_DIFF.value, diff_rows, COLUMNS)
  if _EXPORT_PHASES.value:
    flat = [r for lab, run, ends in phase_rows for r in _seed_rows(lab, run, ends, phase_columns)]
    stats.write_seed_rows(_EXPORT_PHASES.value, flat, phase_columns)


if __name__ == "__main__":
  cli.run(main)
