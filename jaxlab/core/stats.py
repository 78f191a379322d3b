"""Intervals over seeds and the per-seed tables behind every reported number.

One helper computes every interval jaxlab reports (:func:`mean_ci`, a 95% Student-t interval
over seeds) and one writes it (:func:`format_ci`). A study's table is kept as its per-seed
rows in a small CSV (``docs/reproductions/data/<study>/<table>.csv``: columns ``arm``,
``run``, ``seed``, then one column per reported metric); :func:`seed_table` turns such rows
back into the markdown table of the page, so a reader can audit a number without rerunning
(``python -m launch.analyze --data=<file>.csv``).

Scores over many items of one run (a benchmark's accuracy per language) get a percentile
bootstrap interval instead (:func:`bootstrap_interval`): items, not seeds, are the sample.
"""

from __future__ import annotations

import csv
import fnmatch
import math
import re
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

ID_COLUMNS = ("arm", "run", "seed")


def mean_ci(values) -> tuple[float, float]:
  """Mean and the half-width of a 95% Student-t interval over seeds,
  ``t_{0.975, n-1} · s / √n`` (0 for one value, NaN for none). With 3-5 seeds the normal
  approximation ``1.96 · s / √n`` would be 2.2-1.4x too narrow. The quantile is
  ``scipy.special.stdtrit``, the function behind ``scipy.stats.t.ppf`` (equal for every df
  from 1 to 1999), whose import is ~0.3 s instead of ~0.9 s: every run's end-of-run plots
  come through here."""
  from scipy import special  # pylint: disable=g-import-not-at-top
  values = np.asarray(values, dtype=np.float64).reshape(-1)
  if values.size == 0:
    return math.nan, math.nan
  if values.size == 1:
    return float(values[0]), 0.0
  half = special.stdtrit(values.size - 1, 0.975) * values.std(ddof=1) / math.sqrt(values.size)
  return float(values.mean()), float(half)


def format_ci(mean: float, half: float) -> str:
  """``"0.737 ± 0.022"``: the half-width to two significant digits, the mean to the same
  decimal place (four significant digits when the half-width is 0, or float rounding of the
  mean, as when every seed has the same value); ``"n/a"`` for NaN."""
  if not math.isfinite(mean):
    return "n/a"
  # A half-width at float rounding of the mean (seeds with equal values) is written as 0.
  if not math.isfinite(half) or half <= 1e-12 * max(abs(mean), 1.0):
    return f"{mean:.4g}" + ("" if math.isfinite(half) else " ± n/a")
  decimals = 1 - int(math.floor(math.log10(abs(half))))
  if decimals < 0:  # e.g. ± 2912 -> the hundreds: "7300 ± 2900"
    return f"{round(mean, decimals):.0f} ± {round(half, decimals):.0f}"
  return f"{mean:.{decimals}f} ± {half:.{decimals}f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  """A GitHub-markdown table."""
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def write_seed_rows(path: str, rows: Sequence[Mapping[str, object]],
                    columns: Sequence[str]) -> None:
  """Writes per-seed rows (``arm``, ``run``, ``seed`` and ``columns``) as CSV; values are
  written with full float precision, a missing value as an empty cell."""
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow([*ID_COLUMNS, *columns])
    for r in rows:
      w.writerow([r["arm"], r["run"], r["seed"]] +
                 ["" if r.get(c) is None else repr(float(r[c])) for c in columns])


def read_seed_rows(path: str) -> tuple[list[str], list[dict[str, object]]]:
  """``(metric columns, rows)`` of a per-seed CSV written by :func:`write_seed_rows`.

  Raises:
    ValueError: naming the file and the line, for a missing id column or a value that is not
      a number.
  """
  with open(path, newline="") as f:
    reader = csv.reader(f)
    header = next(reader, None)
    if header is None or tuple(header[:3]) != ID_COLUMNS:
      raise ValueError(f"{path}: the first line must start with {','.join(ID_COLUMNS)}")
    columns = header[3:]
    rows = []
    for line, cells in enumerate(reader, start=2):
      if len(cells) != len(header):
        raise ValueError(f"{path}:{line}: {len(cells)} cells, expected {len(header)}")
      row: dict[str, object] = dict(zip(ID_COLUMNS, cells[:3]))
      for c, v in zip(columns, cells[3:]):
        try:
          row[c] = float(v) if v != "" else math.nan
        except ValueError:
          raise ValueError(f"{path}:{line}: column {c!r} holds {v!r}, not a number") from None
      rows.append(row)
  return columns, rows


def seed_table(rows: Iterable[Mapping[str, object]], columns: Sequence[str]) -> str:
  """The markdown table of per-seed rows: one line per arm (in first-seen order), its number of
  seeds, and ``mean ± 95% t-interval`` per column. A column where some seeds have no finite
  value says over how many it was taken, ``(k/n)``; one where none has reads ``never (0/n)``
  when some are +inf (a threshold never reached: :func:`launch.analyze.steps_to_threshold`)
  and ``—`` when all are missing (NaN: a metric the arm does not log)."""
  arms: dict[str, list[Mapping[str, object]]] = {}
  for r in rows:
    arms.setdefault(str(r["arm"]), []).append(r)
  out = []
  for arm, rs in arms.items():
    cells = [arm, str(len(rs))]
    for c in columns:
      v = np.asarray([float(r.get(c, math.nan)) for r in rs], np.float64)
      finite = v[np.isfinite(v)]
      if finite.size:
        text = format_ci(*mean_ci(finite))
        if finite.size != v.size:
          text += f" ({finite.size}/{v.size})"
      else:
        text = f"never (0/{v.size})" if np.isinf(v).any() else "—"
      cells.append(text)
    out.append(cells)
  return markdown_table(["arm", "seeds", *columns], out)


def _seed_key(row: Mapping[str, object]) -> tuple[str, int]:
  """Which seed a per-seed row is: the ``_s<N>`` suffix of its run (runs of one seed each,
  pooled by ``--group_by=seed_suffix``) and its ``seed`` column (seeds vmapped in one run)."""
  m = re.search(r"_s(\d+)$", str(row["run"]))
  return (m.group(1) if m else "", int(row["seed"]))


def paired_differences(rows: Sequence[Mapping[str, object]], columns: Sequence[str],
                       baseline: str) -> list[dict[str, object]]:
  """Per-seed differences ``arm − baseline`` of every other arm (in first-seen order), seed
  matched with seed (:func:`_seed_key`), for every column; seeds one of the two arms lacks are
  left out. Arms that share seeds (and so initialisations or data) are compared this way, so
  their differences are i.i.d. over seeds and :func:`mean_ci` of them is a valid interval.

  Raises:
    ValueError: no arm is ``baseline`` (the arms named), or an arm has a seed twice.
  """
  arms: dict[str, dict[tuple[str, int], Mapping[str, object]]] = {}
  for r in rows:
    per = arms.setdefault(str(r["arm"]), {})
    key = _seed_key(r)
    if key in per:
      raise ValueError(f"arm {r['arm']!r} has seed {key} twice (runs {per[key]['run']!r} and "
                       f"{r['run']!r})")
    per[key] = r
  if baseline not in arms:
    raise ValueError(f"no arm {baseline!r}; the arms are {', '.join(map(repr, arms))}")
  out = []
  for arm, per in arms.items():
    if arm == baseline:
      continue
    for key, r in per.items():
      b = arms[baseline].get(key)
      if b is None:
        continue
      out.append({"arm": f"{arm} − {baseline}", "run": f"{r['run']} vs {b['run']}",
                  "seed": r["seed"], **{c: float(r.get(c, math.nan)) - float(b.get(c, math.nan))
                                        for c in columns}})
  return out


def merge_seed_rows(tables: Sequence[tuple[str, Sequence[Mapping[str, object]]]],
                    columns: Sequence[str],
                    runs: Sequence[str] | None = None) -> list[dict[str, object]]:
  """One per-seed row per run from several per-seed tables (e.g. CSVs of one study written by
  different commands): rows are matched by ``(arm, run, seed)`` in first-seen order, and each
  column takes the finite value of the first table that has one (NaN if none does).

  Args:
    tables: ``(name, rows)`` pairs, ``name`` (a file) used in errors.
    columns: the metric columns to keep.
    runs: if given, keep only runs whose name matches one of these ``fnmatch`` patterns.

  Raises:
    ValueError: two tables give one run's column different finite values (naming both), or a
      run pattern matches no row.
  """
  merged: dict[tuple[str, str, str], dict[str, object]] = {}
  source: dict[tuple[tuple[str, str, str], str], str] = {}
  for name, rows in tables:
    for r in rows:
      if runs is not None and not any(fnmatch.fnmatch(str(r["run"]), p) for p in runs):
        continue
      key = (str(r["arm"]), str(r["run"]), str(r["seed"]))
      out = merged.setdefault(key, {"arm": key[0], "run": key[1], "seed": r["seed"],
                                    **{c: math.nan for c in columns}})
      for c in columns:
        v = float(r.get(c, math.nan))
        if not math.isfinite(v):
          continue
        if not math.isfinite(float(out[c])):
          out[c], source[(key, c)] = v, name
        elif v != out[c]:
          raise ValueError(f"run {key[1]!r} column {c!r}: {out[c]!r} in {source[(key, c)]} but "
                           f"{v!r} in {name}")
  for p in runs or ():
    if not any(fnmatch.fnmatch(run, p) for _, run, _ in merged):
      raise ValueError(f"no row's run matches {p!r}")
  return list(merged.values())


def parse_labels(specs: Iterable[str]) -> dict[str, str]:
  """``{OLD: NEW}`` from ``OLD:NEW`` strings (the ``--label`` flags of ``launch.analyze`` and
  ``launch.ns_phases``; split at the first ``:``).

  Raises:
    ValueError: naming the flag value, for one without ``:`` or with an empty side.
  """
  out = {}
  for spec in specs:
    old, sep, new = spec.partition(":")
    if not sep or not old or not new:
      raise ValueError(f"--label={spec!r}: expected OLD:NEW")
    out[old] = new
  return out


def bootstrap_interval(statistic: Callable[[np.ndarray], np.ndarray],
                       strata: int | Sequence[int] | np.ndarray, *,
                       num_resamples: int = 1000, seed: int = 0, level: float = 0.95,
                       chunk: int = 128) -> np.ndarray:
  """Percentile bootstrap interval of a statistic of n items, resampled with replacement.

  A resample is given to ``statistic`` as integer weights: how many times each item was drawn.
  ``statistic(w)`` maps weights ``[b, n]`` to values ``[b]`` or ``[b, k]``, NaN where a
  resample leaves it undefined (e.g. a ratio over an empty subset; such draws are left out of
  the percentiles). With all weights 1 it is the point estimate, so one function serves both.
  Weights (rather than gathered copies) keep memory at ``chunk * n`` for any item shape.

  Args:
    statistic: weights ``[b, n]`` -> ``[b]`` or ``[b, k]``.
    strata: the number of items ``n``, or one label per item: each stratum is resampled within
      itself, keeping its size (e.g. a macro average over languages keeps every language's
      item count).
    num_resamples: bootstrap draws.
    seed: seeds the ``numpy`` Generators (one per stratum); the same arguments give the same
      interval.
    level: coverage of the central interval.
    chunk: resamples drawn at a time (memory only; the draws do not depend on it).

  Returns:
    ``[2]`` (lo, hi), or ``[k, 2]`` for a statistic with k outputs; NaN where every resample
    was NaN or there are no items.
  """
  if num_resamples < 1:
    raise ValueError(f"num_resamples={num_resamples}: expected at least 1")
  labels = np.zeros(strata, np.int64) if np.isscalar(strata) else np.asarray(strata)
  n = labels.shape[0]
  members = [np.flatnonzero(labels == s) for s in np.unique(labels)]
  # One Generator per stratum, each drawing resample after resample: chunking cannot change
  # which items are drawn.
  rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(len(members))]
  draws = []
  for start in range(0, num_resamples, chunk):
    b = min(chunk, num_resamples - start)
    # Item drawn j-th in stratum s of resample r: members[s][picks[r, j]]; count by bincount.
    picked = [idx[rng.integers(0, idx.size, (b, idx.size))] for idx, rng in zip(members, rngs)]
    flat = (np.arange(b)[:, None] * n + np.concatenate(picked or [np.zeros((b, 0), np.int64)],
                                                        axis=1)).ravel()
    weights = np.bincount(flat, minlength=b * n).reshape(b, n)
    draws.append(np.asarray(statistic(weights), np.float64))
  values = np.concatenate(draws)
  single = values.ndim == 1
  values = values.reshape(values.shape[0], -1)
  tail = 50.0 * (1.0 - level)
  out = np.full((values.shape[1], 2), np.nan)
  for j in range(values.shape[1]):
    finite = values[:, j][np.isfinite(values[:, j])]
    if finite.size:
      out[j] = np.percentile(finite, [tail, 100.0 - tail])
  return out[0] if single else out
