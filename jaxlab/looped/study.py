"""Per-run values of the looped study's criteria (docs/reproductions/looped.md), read from what
``launch.train`` and ``launch.analyze --kind=looped`` wrote.

A looped run directory holds ``summary.json`` (its held-out accuracies) and ``analysis/``
(``metrics.json`` and ``results.npz`` of :func:`jaxlab.looped.analyze.run_analysis`, run at trip
counts that include the trained mean r-bar, 2 r-bar and a larger one). A feed-forward run has no
analysis of its own: its stage curves are in the ``baseline`` section of the looped runs
analysed against it, and :func:`baseline_row` reads them from there.

Every value is a number per run, so that :func:`jaxlab.core.stats.seed_table` gives the
mean and 95% Student-t interval over seeds; ``launch.analyze --kind=looped_study`` writes the
per-seed CSV and prints that table.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np

from jaxlab.core import files
from jaxlab.looped import convergence, stages

THRESHOLD = 1e-2  # the fixed-point tolerance of spec §1.7 criterion 1

# Column -> what it measures (the study's page quotes these).
COLUMNS = {
    "eval_accuracy": "held-out greedy exact match over the three tasks (summary.json)",
    "fixed_share_at_2rbar": "share of real tokens whose state moved by delta < 1e-2 (relative) "
                            "between iterations 2 r-bar - 1 and 2 r-bar, in every slot",
    "min_slot_distance": "median over tokens of the smallest relative distance between two "
                         "slots' states at the largest trip count",
    "pca_retrace": "distance between the last two iterations' PCA paths of one token, over "
                   "the path's size (0: a closed polygon retraced)",
    "tv_delta_corr": "correlation over (iteration, slot) of log attention-row total variation "
                     "with log delta, at the largest trip count",
    "periodicity_entropy": "stage periodicity error of the matrix-entropy curve over the core's "
                           "depth at I = r-bar (0: the last iteration repeats the one before)",
    "periodicity_bos_norm": "the same for the BOS-norm curve",
    "drifting_share_at_max": "share of tokens classed drifting at the largest trip count",
    "norm_growth": "median state norm at the last iteration of the largest trip count over "
                   "the median at iteration r-bar",
}


def _read_json(path: str) -> dict[str, Any]:
  with open(path) as f:
    return json.load(f)


def _accuracy(workdir: str) -> float:
  path = os.path.join(workdir, "summary.json")
  if not os.path.isfile(path):
    return math.nan
  return float(_read_json(path).get("eval/accuracy", math.nan))


def _num(value: Any) -> float:
  """A metric as a float; None (JSON null: e.g. the slot distance of a one-slot core) is NaN."""
  return math.nan if value is None else float(value)


def _trained_iterations(metrics: dict[str, Any]) -> int:
  return int(metrics["config"]["trained_iterations"])


def looped_row(workdir: str, analysis: str = "analysis") -> dict[str, float]:
  """The criteria values of one analysed looped run (:data:`COLUMNS`), plus
  ``non_fixed_at_2rbar/<group>`` per token group when the analysis had groups (criterion 5).

  Raises:
    FileNotFoundError: the run has no ``<analysis>/metrics.json``.
    ValueError: the analysis did not include the trip counts the criteria need.
  """
  out_dir = os.path.join(workdir, analysis)
  metrics = _read_json(os.path.join(out_dir, "metrics.json"))
  arrays = np.load(os.path.join(out_dir, "results.npz"))
  rbar = _trained_iterations(metrics)
  iterations = [int(i) for i in metrics["iterations"]]
  top = max(iterations)
  if top < 2 * rbar or rbar not in iterations:
    raise ValueError(f"{out_dir}: analysed at trip counts {iterations}; the study needs "
                     f"r-bar={rbar} and a largest one >= 2 r-bar={2 * rbar}")
  mask = np.asarray(arrays["mask"], bool)
  per = metrics["per_iteration"]
  m_top, m_rbar = per[str(top)], per[str(rbar)]
  if "state_norm_median" not in m_top:
    raise ValueError(f"{out_dir}/metrics.json: no state_norm_median (written by an older "
                     "analysis); rerun launch.analyze --kind=looped on this run")
  norms = np.asarray(m_top["state_norm_median"], np.float64)   # [I, J]
  groups = {f"non_fixed_at_2rbar/{g}": float(v["non_fixed"])
            for g, v in per.get(str(2 * rbar), {}).get("classes", {}).items()
            if isinstance(v, dict) and g != "all" and v.get("count")}
  return dict(
      **groups,
      eval_accuracy=_accuracy(workdir),
      fixed_share_at_2rbar=convergence.settled_share(arrays[f"I{top}/delta"], 2 * rbar, mask,
                                                     THRESHOLD),
      min_slot_distance=_num(m_top.get("min_slot_distance_median")),
      pca_retrace=_num(metrics["pca"].get("retrace")),
      tv_delta_corr=_num(m_top.get("tv_delta_log_corr")),
      periodicity_entropy=_num(m_rbar["stage_periodicity_error"]["matrix_entropy"]),
      periodicity_bos_norm=_num(m_rbar["stage_periodicity_error"]["bos_norm"]),
      drifting_share_at_max=float(m_top["classes"]["all"]["drifting"]),
      norm_growth=float(np.median(norms[-1]) / np.median(norms[rbar - 1])),
  )


def baseline_row(looped_workdir: str, baseline_workdir: str,
                 analysis: str = "analysis") -> dict[str, float]:
  """A feed-forward run's values: its accuracy and the periodicity of its stage curves over
  the layers that stand where the looped model's core is (prelude p, then R x r-bar layers),
  cut into r-bar groups of R as the looped curves are; the other criteria do not apply (NaN).
  """
  metrics = _read_json(os.path.join(looped_workdir, analysis, "metrics.json"))
  if "baseline" not in metrics:
    raise ValueError(f"{looped_workdir}/{analysis}: analysed without --baseline")
  c = metrics["config"]
  p, r, rbar = int(c["n_prelude"]), int(c["slots_per_iteration"]), _trained_iterations(metrics)
  row = {k: math.nan for k in COLUMNS}
  row["eval_accuracy"] = _accuracy(baseline_workdir)
  for name, key in (("periodicity_entropy", "matrix_entropy"),
                    ("periodicity_bos_norm", "bos_norm")):
    curve = np.asarray(metrics["baseline"]["stages"][key], np.float64)
    row[name] = stages.periodicity_error(curve[p:p + r * rbar].reshape(rbar, r))
  return row


# Per-iteration curves at the largest trip count (max over slots), pooled over an arm's seeds.
CURVES = ("state_norm", "log10_delta", "log10_attention_tv")


def curve_records(arms: dict[str, list[str]], analysis: str = "analysis"
                  ) -> dict[str, list[dict[str, Any]]]:
  """``{arm: records}`` for :func:`jaxlab.core.plotting.plot_runs` (x key ``iteration``): per
  iteration of the largest trip count, each seed's median state norm, log10 median delta and
  log10 attention-row variation (the largest over slots); feed-forward runs are skipped."""
  out = {}
  for arm, workdirs in arms.items():
    per_seed = []
    for w in workdirs:
      if not is_looped(w):
        continue
      metrics = _read_json(os.path.join(w, analysis, "metrics.json"))
      m = metrics["per_iteration"][str(max(int(i) for i in metrics["iterations"]))]
      per_seed.append(dict(
          state_norm=np.max(np.asarray(m["state_norm_median"], np.float64), axis=1),
          log10_delta=np.log10(np.max(np.asarray(m["delta_median"], np.float64), axis=1)
                               + 1e-30),
          log10_attention_tv=np.log10(np.max(np.asarray(m["attention_tv"], np.float64),
                                             axis=1) + 1e-30)))
    if not per_seed:
      continue
    n = len(per_seed[0]["state_norm"])
    records = []
    for t in range(n):
      rec = {"step": t, "iteration": t + 1, "state_norm": [s["state_norm"][t] for s in per_seed]}
      if t:  # delta and attention variation compare iteration t + 1 with iteration t
        for key in ("log10_delta", "log10_attention_tv"):
          rec[key] = [s[key][t - 1] for s in per_seed]
      records.append(rec)
    out[arm] = records
  return out


def columns(rows: list[dict[str, Any]]) -> list[str]:
  """:data:`COLUMNS`, then the per-group columns some row has, sorted."""
  extra = sorted({k for r in rows for k in r if k.startswith("non_fixed_at_2rbar/")})
  return list(COLUMNS) + extra


def _matches_depth(looped_workdir: str, analysis: str) -> bool:
  """Whether the run was analysed against a baseline as deep as its unrolled model at r-bar
  (p + R r-bar + c), the baseline the stage comparison needs."""
  metrics = _read_json(os.path.join(looped_workdir, analysis, "metrics.json"))
  if "baseline" not in metrics:
    return False
  c = metrics["config"]
  depth = (int(c["n_prelude"]) + int(c["slots_per_iteration"]) * _trained_iterations(metrics)
           + int(c.get("n_coda", 0)))
  return int(metrics["baseline"].get("depth", -1)) == depth


def _family(config: dict[str, Any]) -> str | None:
  return config.get("model", {}).get("family")


def is_looped(workdir: str) -> bool:
  """Whether a run trained a looped model (else a feed-forward decoder)."""
  return _family(files.read_run_config(workdir)) == "looped"


def study_rows(arms: dict[str, list[str]], analysis: str = "analysis") -> list[dict[str, Any]]:
  """Per-seed rows (``arm``, ``run``, ``seed`` and :data:`COLUMNS`) of ``{arm: [workdirs]}``.

  A feed-forward run takes its stage curves from a looped run of the same seed and effective
  depth analysed against it (the first such run in the order given).

  Raises:
    ValueError: a feed-forward run with no looped run of its seed analysed with a baseline.
  """
  # each config.json read once
  configs = {w: files.read_run_config(w) for ws in arms.values() for w in ws}
  seed = lambda w: configs[w].get("seed", "")  # noqa: E731
  looped = [w for w, c in configs.items() if _family(c) == "looped"]
  rows = []
  for arm, workdirs in arms.items():
    for w in workdirs:
      if w in looped:
        values = looped_row(w, analysis)
      else:
        partners = [lw for lw in looped if seed(lw) == seed(w) and _matches_depth(lw, analysis)]
        if not partners:
          raise ValueError(f"{w}: a feed-forward run, and no looped run of seed {seed(w)} and "
                           "the same effective depth was analysed with it as --baseline")
        values = baseline_row(partners[0], w, analysis)
      rows.append(dict(arm=arm, run=os.path.basename(os.path.normpath(w)), seed=seed(w),
                       **values))
  return rows
