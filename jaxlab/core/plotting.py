"""Learning curves as PNG files, from ``metrics.jsonl`` records.

Per-seed values (lists in a record) are drawn as their mean with a 95% confidence band
(Student-t over seeds, :func:`jaxlab.core.stats.mean_ci`); scalars as a single line.
"""

from __future__ import annotations

import os
from typing import Iterable, Sequence

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from jaxlab.core import files  # pylint: disable=wrong-import-position
from jaxlab.core.stats import mean_ci  # pylint: disable=wrong-import-position


def series(records: Sequence[dict], key: str, x_key: str = "env_steps"):
  """Returns (x [n], mean [n], half-width of the 95% CI [n]) over records that have ``key``."""
  xs, means, halves = [], [], []
  for rec in records:
    if key not in rec or rec[key] is None:
      continue
    values = np.asarray(rec[key], dtype=np.float64).reshape(-1)
    values = values[np.isfinite(values)]
    if values.size == 0:
      continue
    xs.append(rec.get(x_key, rec["step"]))
    mean, half = mean_ci(values)
    means.append(mean)
    halves.append(half)
  return np.asarray(xs), np.asarray(means), np.asarray(halves)


def plot_runs(runs: dict[str, Sequence[dict]], keys: Iterable[str], out_dir: str,
              x_key: str = "env_steps") -> list[str]:
  """One PNG per metric key, with one curve per run. Returns the written paths."""
  os.makedirs(out_dir, exist_ok=True)
  written = []
  for key in keys:
    fig, ax = plt.subplots(figsize=(6, 4))
    drawn = False
    for label, records in runs.items():
      x, mean, half = series(records, key, x_key)
      if x.size == 0:
        continue
      ax.plot(x, mean, label=label)
      if np.any(half > 0):
        ax.fill_between(x, mean - half, mean + half, alpha=0.25)
      drawn = True
    if not drawn:
      plt.close(fig)
      continue
    ax.set_xlabel(x_key)
    ax.set_ylabel(key)
    ax.set_title(key)
    ax.grid(alpha=0.3)
    if len(runs) > 1:
      ax.legend(fontsize=8)
    fig.tight_layout()
    path = os.path.join(out_dir, key.replace("/", "_") + ".png")
    files.write_figure(path, fig)
    plt.close(fig)
    written.append(path)
  return written


def numeric_keys(records: Sequence[dict]) -> list[str]:
  """Every metric key holding numbers (or per-seed lists of numbers), in first-seen order."""
  keys: dict[str, None] = {}
  for rec in records:
    for k, v in rec.items():
      if k in ("step",) or isinstance(v, str):
        continue
      keys.setdefault(k, None)
  return list(keys)
