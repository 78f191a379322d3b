"""The looped study's per-run values (jaxlab.looped.study) on a hand-made analysis directory,
and the launcher's table of them."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jaxlab.core import stats
from jaxlab.looped import stages, study

RBAR, TOP, J, B, T = 2, 4, 2, 1, 4


def _write_run(path, family="looped", seed=0, accuracy=0.5, baseline=None, analysis=True,
               depth=6):
  os.makedirs(path)
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump({"seed": seed, "model": {"family": family}}, f)
  with open(os.path.join(path, "summary.json"), "w") as f:
    json.dump({"eval/accuracy": accuracy}, f)
  if not analysis:
    return
  mask = np.array([[False, True, True, True]])
  delta = np.full((TOP - 1, J, B, T), 0.5)
  # At iteration 2 r-bar = 4 (entry 2): token 1 settled in both slots, token 2 in one only,
  # token 3 in both; the padding token 0 would count if the mask were ignored.
  delta[2, :, 0, 1] = 1e-3
  delta[2, 0, 0, 2] = 1e-3
  delta[2, :, 0, 3] = 1e-4
  norms = [[1.0, 1.0], [2.0, 2.0], [3.0, 3.0], [6.0, 6.0]]   # [I, J] medians
  per = {str(RBAR): {"stage_periodicity_error": {"matrix_entropy": 0.25, "bos_norm": 0.5}},
         str(TOP): {"min_slot_distance_median": 0.3, "tv_delta_log_corr": 0.9,
                    "state_norm_median": norms,
                    "delta_median": [[0.1, 0.2], [0.01, 0.02], [0.001, 0.001]],
                    "attention_tv": [[0.1, 0.1], [0.01, 0.01], [0.001, 0.001]],
                    "classes": {"all": {"drifting": 0.125}}}}
  metrics = {"config": {"trained_iterations": RBAR, "n_prelude": 1, "slots_per_iteration": J},
             "iterations": [RBAR, TOP], "per_iteration": per, "pca": {"retrace": 0.01}}
  if baseline is not None:
    metrics["config"]["n_coda"] = 1
    metrics["baseline"] = {"depth": depth, "stages": {"matrix_entropy": baseline,
                                                      "bos_norm": baseline}}
  out = os.path.join(path, "analysis")
  os.makedirs(out)
  with open(os.path.join(out, "metrics.json"), "w") as f:
    json.dump(metrics, f)
  np.savez(os.path.join(out, "results.npz"), mask=mask, **{f"I{TOP}/delta": delta})


def test_looped_row_measures_the_criteria(tmp_path):
  run = str(tmp_path / "sandwich_s0")
  _write_run(run)
  row = study.looped_row(run)
  assert row["fixed_share_at_2rbar"] == pytest.approx(2 / 3)  # tokens 1 and 3 of 3 real ones
  assert row["norm_growth"] == pytest.approx(6.0 / 2.0)       # last iteration over iteration r-bar
  assert (row["min_slot_distance"], row["pca_retrace"], row["tv_delta_corr"]) == (0.3, 0.01, 0.9)
  assert (row["periodicity_entropy"], row["periodicity_bos_norm"]) == (0.25, 0.5)
  assert row["drifting_share_at_max"] == 0.125 and row["eval_accuracy"] == 0.5
  assert set(row) == set(study.COLUMNS)
  # A one-slot core has no slot distance (JSON null): NaN, not an error.
  path = os.path.join(run, "analysis", "metrics.json")
  with open(path) as f:
    metrics = json.load(f)
  metrics["per_iteration"][str(TOP)]["min_slot_distance_median"] = None
  with open(path, "w") as f:
    json.dump(metrics, f)
  assert np.isnan(study.looped_row(run)["min_slot_distance"])
  # With token groups at I = 2 r-bar, their non-fixed shares are extra columns.
  path = os.path.join(run, "analysis", "metrics.json")
  with open(path) as f:
    metrics = json.load(f)
  metrics["per_iteration"][str(TOP)]["classes"].update(
      question={"non_fixed": 0.25, "count": 4}, other={"non_fixed": 1.0, "count": 0})
  with open(path, "w") as f:
    json.dump(metrics, f)
  row = study.looped_row(run)
  assert row["non_fixed_at_2rbar/question"] == 0.25 and "non_fixed_at_2rbar/other" not in row
  assert study.columns([row]) == list(study.COLUMNS) + ["non_fixed_at_2rbar/question"]


def test_feedforward_row_cuts_its_curve_where_the_core_stands(tmp_path):
  curve = [9.0, 1.0, 2.0, 1.0, 3.0, 9.0]  # prelude, 2 x (R = 2) core-position layers, coda
  looped, ff = str(tmp_path / "a_s0"), str(tmp_path / "ff_s0")
  _write_run(looped, baseline=curve)
  _write_run(ff, family="decoder", accuracy=0.25, analysis=False)
  rows = study.study_rows({"a": [looped], "ff": [ff]})
  want = stages.periodicity_error(np.array([[1.0, 2.0], [1.0, 3.0]]))
  assert want == pytest.approx(0.5)
  assert rows[1]["periodicity_entropy"] == pytest.approx(want)
  assert rows[1]["eval_accuracy"] == 0.25 and np.isnan(rows[1]["norm_growth"])
  table = stats.seed_table(rows, ["eval_accuracy", "periodicity_entropy"])
  assert table.splitlines()[-1] == "| ff | 1 | 0.25 | 0.5 |"
  with pytest.raises(ValueError, match="no looped run of seed 0 and the same effective depth"):
    study.study_rows({"ff": [ff]})
  # A looped run of another depth (its baseline deeper than p + R r-bar + c = 6) is skipped.
  deeper = str(tmp_path / "b_s0")
  _write_run(deeper, baseline=[0.0] * 10, depth=10)
  rows = study.study_rows({"b": [deeper], "a": [looped], "ff": [ff]})
  assert rows[2]["periodicity_entropy"] == pytest.approx(want)


def test_launcher_prints_the_table_and_names_a_stale_analysis(tmp_path):
  for s in (0, 1):
    _write_run(str(tmp_path / f"sandwich_s{s}"), seed=s)
  out = tmp_path / "table"
  cmd = [sys.executable, "-m", "launch.analyze", "--kind=looped_study",
         f"--workdir={tmp_path}/sandwich_s*", f"--out={out}"]
  res = subprocess.run(cmd, capture_output=True, text=True, check=False)
  assert res.returncode == 0, res.stderr
  assert "| sandwich | 2 |" in res.stdout
  assert (out / "table.csv").read_text().count("\n") == 3
  assert {f"{k}.png" for k in study.CURVES} <= set(os.listdir(out))
  records = study.curve_records({"sandwich": [str(tmp_path / "sandwich_s0")]})["sandwich"]
  assert records[3]["state_norm"] == [6.0] and "log10_delta" not in records[0]
  assert records[1]["log10_delta"] == [pytest.approx(np.log10(0.2))]
  res = subprocess.run(cmd + ["--keys=eval_accuracy,norm_growth"], capture_output=True,
                       text=True, check=False)
  assert res.returncode == 0 and "| sandwich | 2 | 0.5 | 3 |" in res.stdout, res.stderr
  res = subprocess.run(cmd + ["--keys=nope"], capture_output=True, text=True, check=False)
  assert res.returncode == 2 and "--keys: no column nope" in res.stderr
  path = tmp_path / "sandwich_s1" / "analysis" / "metrics.json"
  metrics = json.loads(path.read_text())
  del metrics["per_iteration"][str(TOP)]["state_norm_median"]
  path.write_text(json.dumps(metrics))
  res = subprocess.run(cmd, capture_output=True, text=True, check=False)
  assert res.returncode == 2
  assert res.stderr.strip().splitlines()[-1].startswith(f"error: {path}: no state_norm_median")
