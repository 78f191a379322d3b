"""Evaluations pooled over training seeds: ``benchmark.seed_rows`` and ``launch.analyze
--kind=eval_runs`` (the per-seed table behind docs/reproductions/kaleidoscope.md's five-seed
result)."""

import json
import os
import subprocess
import sys

import pytest

from jaxlab.core.errors import DataError
from jaxlab.evals import benchmark, mcq

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _evaluate(workdir, right_es, right_fr, regime):
  """A results.json of 8 items (4 es, 4 fr, answer B) with ``right_*`` of each answered B and
  the rest C."""
  items = [mcq.Scored(f"{lang}{i}", 1, 1 if i < right else 2, {"language": lang})
           for lang, right in (("es", right_es), ("fr", right_fr)) for i in range(4)]
  per_item = [{"key": it.key, "choice": it.choice} for it in items]
  mcq.write_results(workdir, task=f"kaleidoscope_{regime}", items=items,
                    breakdown_keys=[], config={"regime": regime}, per_item=per_item,
                    num_bootstrap=20)


@pytest.fixture(name="runs")
def _runs(tmp_path):
  """Three training runs, each scored in two regimes: s0 and s1 name their seed in
  config.json (7 and 8, not their suffix), s2 has no config.json (seed from the suffix)."""
  right = {0: ((4, 2), (3, 3)), 1: ((2, 2), (1, 1)), 2: ((4, 4), (4, 0))}
  for s, ((de, df), (ce, cf)) in right.items():
    run = tmp_path / f"kscope_s{s}"
    _evaluate(str(run / "direct"), de, df, "direct")
    _evaluate(str(run / "cot"), ce, cf, "cot")
    if s < 2:
      (run / "config.json").write_text(json.dumps({"seed": 7 + s}))
  return tmp_path


def test_seed_rows_one_row_per_evaluation_with_the_training_seed(runs):
  workdirs = [str(runs / f"kscope_s{s}" / regime) for regime in ("direct", "cot")
              for s in range(3)]
  columns, rows = benchmark.seed_rows(workdirs)
  assert columns[:2] == ["total_accuracy/macro_language", "valid_accuracy/macro_language"]
  assert set(columns) == {f"{m}/{agg}" for m in mcq.METRICS
                          for agg in ("macro_language", "micro")}
  assert [(r["arm"], r["run"], r["seed"]) for r in rows] == [
      ("direct", "kscope_s0", 7), ("direct", "kscope_s1", 8), ("direct", "kscope_s2", 2),
      ("cot", "kscope_s0", 7), ("cot", "kscope_s1", 8), ("cot", "kscope_s2", 2)]
  # macro = mean of es and fr: (4/4 + 2/4) / 2 for s0 direct; micro = 6/8.
  assert rows[0]["total_accuracy/macro_language"] == pytest.approx(0.75)
  assert rows[2]["total_accuracy/micro"] == pytest.approx(1.0)
  assert rows[5]["total_accuracy/macro_language"] == pytest.approx(0.5)
  assert rows[4]["format_error_rate/micro"] == 0.0


def test_seed_rows_bad_folders_are_one_line_naming_the_file(runs):
  with pytest.raises(DataError, match=r"nowhere/results.json: not a benchmark results file"):
    benchmark.seed_rows([str(runs / "nowhere")])
  odd = runs / "kscope_s3" / "direct"
  odd.mkdir(parents=True)
  (odd / "results.json").write_text(json.dumps({"results": {"t": {"accuracy,all": 0.5}}}))
  with pytest.raises(DataError, match=r"kscope_s3/direct/results.json: reports accuracy/all; "
                     r"the first evaluation \(.*kscope_s0/direct\) reports format_error_rate"):
    benchmark.seed_rows([str(runs / "kscope_s0" / "direct"), str(odd)])


def test_analyze_eval_runs_pools_seeds_per_regime(runs, tmp_path):
  export = str(tmp_path / "seeds.csv")
  base = [sys.executable, "-m", "launch.analyze", "--kind=eval_runs",
          f"--workdir={runs}/kscope_s*/direct,{runs}/kscope_s*/cot", f"--out={tmp_path}/out"]
  out = subprocess.run(base + ["--keys=total_accuracy/macro_language", f"--export={export}"],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr
  with open(export) as f:
    lines = f.read().splitlines()
  assert lines[0] == "arm,run,seed,total_accuracy/macro_language"
  assert [line.split(",")[:3] for line in lines[1:]] == [
      ["direct", "kscope_s0", "7"], ["direct", "kscope_s1", "8"], ["direct", "kscope_s2", "2"],
      ["cot", "kscope_s0", "7"], ["cot", "kscope_s1", "8"], ["cot", "kscope_s2", "2"]]
  # direct: 0.75, 0.5, 1.0 -> mean 0.75 over 3 seeds; cot: 0.75, 0.25, 0.5 -> 0.5.
  assert "\n| direct | 3 | 0.75 ± " in out.stdout, out.stdout
  assert "\n| cot | 3 | 0.50 ± " in out.stdout, out.stdout
  bad = subprocess.run(base + ["--keys=accuracy"], cwd=REPO, capture_output=True, text=True,
                       timeout=300)
  assert bad.returncode == 2
  assert bad.stderr.strip().splitlines() == [
      "error: --keys: no column accuracy; the columns are total_accuracy/macro_language, "
      "valid_accuracy/macro_language, format_error_rate/macro_language, total_accuracy/micro, "
      "valid_accuracy/micro, format_error_rate/micro"]
