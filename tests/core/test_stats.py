"""Intervals, their formatting, and per-seed tables that rebuild a page's table."""

import math

import numpy as np
import pytest

from jaxlab.core import stats


def test_mean_ci_is_student_t():
  mean, half = stats.mean_ci([1.0, 3.0])
  assert mean == 2.0 and half == pytest.approx(12.7062 * np.std([1.0, 3.0], ddof=1) / np.sqrt(2),
                                               rel=1e-4)
  assert stats.mean_ci([4.0]) == (4.0, 0.0)
  assert all(math.isnan(x) for x in stats.mean_ci([]))
  # Exactly scipy.stats' t quantile, for the seed counts studies use and beyond.
  from scipy import stats as scipy_stats  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  for n in (3, 5, 10, 30, 200):
    x = rng.normal(size=n)
    expected = scipy_stats.t.ppf(0.975, n - 1) * x.std(ddof=1) / math.sqrt(n)
    assert stats.mean_ci(x) == (float(x.mean()), float(expected))


@pytest.mark.parametrize("mean, half, text", [
    (0.7371, 0.0224, "0.737 ± 0.022"),
    (16.93, 3.81, "16.9 ± 3.8"),
    (7333.3, 2912.0, "7300 ± 2900"),
    (92.47, 0.06, "92.470 ± 0.060"),
    (0.0071, 0.0083, "0.0071 ± 0.0083"),
    (5.0, 0.0, "5"),
    (0.015, 1.8e-16, "0.015"),  # two seeds with equal values: rounding, not an interval
    (float("nan"), 1.0, "n/a"),
])
def test_format_ci(mean, half, text):
  assert stats.format_ci(mean, half) == text


def test_seed_rows_round_trip_and_table(tmp_path):
  rows = [{"arm": "a", "run": "a_s0", "seed": 0, "acc": 0.5, "steps": 100.0},
          {"arm": "a", "run": "a_s1", "seed": 0, "acc": 0.7, "steps": float("nan")},
          {"arm": "b", "run": "b", "seed": 0, "acc": 0.9, "steps": float("inf")},
          {"arm": "c", "run": "c", "seed": 0, "acc": 0.1, "steps": float("nan")}]
  path = str(tmp_path / "t.csv")
  stats.write_seed_rows(path, rows, ["acc", "steps"])
  columns, back = stats.read_seed_rows(path)
  assert columns == ["acc", "steps"]
  assert back[0]["acc"] == 0.5 and math.isnan(back[1]["steps"]) and back[2]["run"] == "b"
  table = stats.seed_table(back, columns)
  lines = table.splitlines()
  assert lines[0] == "| arm | seeds | acc | steps |"
  assert lines[2] == "| a | 2 | 0.6 ± 1.3 | 100 (1/2) |"
  assert lines[3] == "| b | 1 | 0.9 | never (0/1) |"  # measured, never reached
  assert lines[4] == "| c | 1 | 0.1 | — |"  # not logged
  assert table == stats.seed_table(rows, columns)


def test_bad_seed_file_names_file_and_line(tmp_path):
  bad = tmp_path / "bad.csv"
  bad.write_text("arm,run,seed,acc\na,r,0,high\n")
  with pytest.raises(ValueError, match=r"bad.csv:2: column 'acc' holds 'high'"):
    stats.read_seed_rows(str(bad))
  bad.write_text("name,acc\n")
  with pytest.raises(ValueError, match="must start with arm,run,seed"):
    stats.read_seed_rows(str(bad))


def test_paired_differences_match_seed_with_seed():
  """Runs pooled by their _s<N> suffix pair by that suffix (not by row order); seeds vmapped in
  one run pair by the seed column; a seed one arm lacks is left out."""
  rows = [{"arm": "base", "run": "base_s1", "seed": 0, "r": 1.0},
          {"arm": "base", "run": "base_s0", "seed": 0, "r": 3.0},
          {"arm": "x", "run": "x_s0", "seed": 0, "r": 4.0},
          {"arm": "x", "run": "x_s1", "seed": 0, "r": 1.5},
          {"arm": "x", "run": "x_s2", "seed": 0, "r": 9.0}]
  diffs = stats.paired_differences(rows, ["r"], "base")
  assert [(d["arm"], d["run"], d["r"]) for d in diffs] == [
      ("x − base", "x_s0 vs base_s0", 1.0), ("x − base", "x_s1 vs base_s1", 0.5)]
  vmapped = [{"arm": a, "run": "run", "seed": s, "r": float(s * k)}
             for a, k in (("b", 1), ("y", 3)) for s in range(3)]
  assert [d["r"] for d in stats.paired_differences(vmapped, ["r"], "b")] == [0.0, 2.0, 4.0]
  with pytest.raises(ValueError, match="no arm 'nope'; the arms are 'base', 'x'"):
    stats.paired_differences(rows, ["r"], "nope")
  with pytest.raises(ValueError, match="seed .* twice"):
    stats.paired_differences(rows + [rows[0]], ["r"], "base")


def test_merge_seed_rows_joins_columns_by_run_and_refuses_disagreement():
  a = [{"arm": "x", "run": "x_s0", "seed": "0", "acc": 0.5, "rate": math.nan},
       {"arm": "y", "run": "y_s0", "seed": "0", "acc": 0.1, "rate": 2.0}]
  b = [{"arm": "x", "run": "x_s0", "seed": "0", "rate": 3.0},
       {"arm": "x", "run": "x_s1", "seed": "1", "acc": 0.7, "rate": 4.0}]
  rows = stats.merge_seed_rows([("a.csv", a), ("b.csv", b)], ["acc", "rate"], runs=["x_*"])
  # x_s0 takes acc from a and rate from b (a's is NaN); y is filtered out; order first-seen.
  assert [(r["run"], r["acc"], r["rate"]) for r in rows] == [("x_s0", 0.5, 3.0),
                                                             ("x_s1", 0.7, 4.0)]
  assert math.isnan(stats.merge_seed_rows([("a.csv", a)], ["missing"])[0]["missing"])
  b[0]["acc"] = 0.6  # the same run's value differs between the files
  with pytest.raises(ValueError, match=r"run 'x_s0' column 'acc': 0.5 in a.csv but 0.6 in b.csv"):
    stats.merge_seed_rows([("a.csv", a), ("b.csv", b)], ["acc"])
  with pytest.raises(ValueError, match="no row's run matches 'z_.'"):
    stats.merge_seed_rows([("a.csv", a)], ["acc"], runs=["z_?"])
