"""Compare runs: a table of final metrics with 95% confidence intervals, and overlaid curves.

    python -m launch.analyze --workdir=runs/a,runs/b,runs/c --out=runs/compare
    python -m launch.analyze --workdir='runs/sweep/*' --keys=eval/episode_return,health/dormant_ratio/critic

Each run contributes its ``metrics.jsonl``. Per-seed values (lists) give the interval over seeds;
runs sharing a label (``--group_by`` a config key, e.g. ``env.name``) are pooled as seeds of one
arm. Writes ``table.md`` / ``table.csv`` and one PNG per key into ``--out``.
"""

from __future__ import annotations

import csv
import glob
import json
import math
import os
import sys

import numpy as np
from absl import app, flags

_WORKDIR = flags.DEFINE_list("workdir", None, "Run directories (comma-separated; globs allowed).")
_OUT = flags.DEFINE_string("out", "runs/analysis", "Output directory for the table and plots.")
_KEYS = flags.DEFINE_list("keys", ["eval/episode_return", "train/episode_return"],
                          "Metric keys for the table and the plots.")
_GROUP_BY = flags.DEFINE_string("group_by", None,
                                "Dotted config key whose value labels (and pools) runs.")
_LAST = flags.DEFINE_integer("last", 1, "Average each run's last N finite records per key.")
_X = flags.DEFINE_string("x", "env_steps", "Metric for the x axis of the curves.")
flags.mark_flag_as_required("workdir")


def _config_value(workdir: str, dotted: str):
  with open(os.path.join(workdir, "config.json")) as f:
    value = json.load(f)
  for part in dotted.split("."):
    if not isinstance(value, dict) or part not in value:
      raise KeyError(f"{workdir}/config.json has no key 'config.{dotted}'")
    value = value[part]
  return value


def final_values(records: list[dict], key: str, last: int) -> np.ndarray:
  """Per-seed values of ``key``: the mean of the last ``last`` finite records, shape [seeds]."""
  rows = []
  for rec in records:
    if key in rec and rec[key] is not None:
      v = np.asarray(rec[key], dtype=np.float64).reshape(-1)
      if np.all(np.isfinite(v)):
        rows.append(v)
  if not rows:
    return np.zeros((0,))
  return np.mean(np.stack(rows[-last:]), axis=0)


def mean_ci(values: np.ndarray) -> tuple[float, float]:
  """Mean and the half-width of a 95% normal-approximation interval (0 for one value)."""
  if values.size == 0:
    return math.nan, math.nan
  half = 1.96 * values.std(ddof=1) / math.sqrt(values.size) if values.size > 1 else 0.0
  return float(values.mean()), float(half)


def main(argv):
  del argv
  from jaxlab.core import metrics as metrics_lib  # pylint: disable=import-outside-toplevel
  from jaxlab.core import plotting  # pylint: disable=import-outside-toplevel

  workdirs = []
  for pattern in _WORKDIR.value:
    matches = sorted(glob.glob(pattern)) or [pattern]
    workdirs += [m for m in matches if os.path.isdir(m)]
  missing = [w for w in workdirs if not os.path.exists(os.path.join(w, "metrics.jsonl"))]
  if not workdirs or missing:
    print(f"error: no metrics.jsonl in {missing or _WORKDIR.value}; pass jaxlab run directories",
          file=sys.stderr)
    sys.exit(2)

  arms: dict[str, list[list[dict]]] = {}
  for w in workdirs:
    try:
      label = (f"{_GROUP_BY.value}={_config_value(w, _GROUP_BY.value)}" if _GROUP_BY.value
               else os.path.basename(os.path.normpath(w)))
    except KeyError as err:
      print(f"error: {err.args[0]}", file=sys.stderr)
      sys.exit(2)
    arms.setdefault(label, []).append(metrics_lib.read_metrics(w))

  os.makedirs(_OUT.value, exist_ok=True)
  header = ["arm", "runs", "seeds"] + [f"{k} (mean ± 95% CI)" for k in _KEYS.value]
  rows = []
  for label, runs in arms.items():
    row = [label, str(len(runs))]
    seeds = 0
    for key in _KEYS.value:
      values = np.concatenate([final_values(r, key, _LAST.value) for r in runs])
      seeds = max(seeds, values.size)
      mean, half = mean_ci(values)
      row.append(f"{mean:.4g} ± {half:.2g}" if math.isfinite(mean) else "n/a")
    row.insert(2, str(seeds))
    rows.append(row)
  with open(os.path.join(_OUT.value, "table.csv"), "w", newline="") as f:
    csv.writer(f).writerows([header] + rows)
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(r) + " |" for r in rows]
  table = "\n".join(lines)
  with open(os.path.join(_OUT.value, "table.md"), "w") as f:
    f.write(table + "\n")
  print(table)

  # Curves: pool the runs of an arm as extra seeds, record by record.
  pooled = {}
  for label, runs in arms.items():
    merged = []
    for i in range(max(len(r) for r in runs)):
      recs = [r[i] for r in runs if i < len(r)]
      rec = {"step": recs[0]["step"], _X.value: recs[0].get(_X.value, recs[0]["step"])}
      for key in _KEYS.value:
        vals = [np.asarray(x[key], dtype=np.float64).reshape(-1) for x in recs if key in x]
        if vals:
          rec[key] = np.concatenate(vals).tolist()
      merged.append(rec)
    pooled[label] = merged
  written = plotting.plot_runs(pooled, _KEYS.value, _OUT.value, x_key=_X.value)
  print(f"wrote {_OUT.value}/table.md, table.csv and {len(written)} plots")


if __name__ == "__main__":
  app.run(main)
