"""Per-seed CSVs of the KL-estimator sweep (configs/kl_estimators/sweep.sh) for the page.

    python configs/kl_estimators/collect.py [--root=runs/kl_sweep] \
        [--out=docs/reproductions/data/kl_estimators]
    python -m launch.analyze --data=docs/reproductions/data/kl_estimators/final.csv  # any CSV
    python -m launch.analyze --update_page=docs/reproductions/kl_estimators.md  # its tables

Only finished runs (``summary.json`` and ``ood.json``) are used. Writes three per-seed CSVs
(``jaxlab.core.stats`` format) into ``--out`` and prints their tables:

* ``final.csv``: exported by ``launch.analyze`` (one arm per row x β, seeds pooled by the
  ``_s<N>`` suffix): step-80 sampled reward (mean of steps 71-80), held-out greedy accuracy,
  the exact reverse and forward KL to the reference (per sequence, steps 71-80) and the entropy;
* ``ood.csv``: the post-hoc scores of ``score_ood.py`` (greedy accuracy on the out-of-domain
  split, overall and per term count; the in-domain greedy accuracy again, as a check), with the
  reference as its own row;
* ``criteria.csv``: the comparisons the page's pre-registered criteria read, one row per
  comparison ``A − B``, one value per seed: the difference of the two runs with the same seed
  (paired by seed; the arms' runs are independent, so the differences are i.i.d. and their
  Student-t interval is valid). An interval wholly above 0 shows A > B, wholly below shows
  A < B, otherwise no ordering is shown.

Also prints the runs done and missing and the per-run wall times (``<run>.time``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys

import numpy as np

from jaxlab.core import stats

ROWS = ("R1", "L3", "R5")
BETAS = ("0.05", "0.1", "0.3")
SEEDS = range(5)
KEYS = ("reward/task", "eval/accuracy", "kl/exact_rev", "kl/exact_fwd", "entropy/mean")
COLUMNS = ("sampled reward", "held-out greedy acc.", "KL(π‖π_ref) exact", "KL(π_ref‖π) exact",
           "entropy / token")
OOD_COLUMNS = {"ood/greedy": "OOD greedy acc. (4-5 terms)", "ood/greedy/4_terms": "4 terms",
               "ood/greedy/5_terms": "5 terms", "ood/sampled": "OOD sampled acc. (T = 1)",
               "in_domain/greedy": "in-domain greedy acc. (check)"}
DIFF_COLUMNS = ("Δ sampled reward", "Δ held-out acc.", "Δ OOD acc.",
                "Δ OOD distance to the reference", "Δ KL(π‖π_ref)")


def all_runs() -> list[str]:
  names = [f"none_b0_s{s}" for s in SEEDS]
  names += [f"{r}_b{b}_s{s}" for r in ROWS for b in BETAS for s in SEEDS]
  return names


def comparisons() -> list[tuple[str, str, str]]:
  """``(label, arm A, arm B)`` of criteria.csv."""
  out = []
  for b in BETAS:
    out += [(f"R1 − L3, β={b}", f"R1_b{b}", f"L3_b{b}"),
            (f"R1 − R5, β={b}", f"R1_b{b}", f"R5_b{b}")]
  for b in BETAS:
    out += [(f"no KL − {r}, β={b}", "none_b0", f"{r}_b{b}") for r in ROWS]
  out += [(f"{r}: β=0.05 − β=0.3", f"{r}_b0.05", f"{r}_b0.3") for r in ROWS]
  return out


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--root", default="runs/kl_sweep")
  p.add_argument("--out", default="docs/reproductions/data/kl_estimators")
  a = p.parse_args(argv)
  done = [n for n in all_runs()
          if os.path.isfile(os.path.join(a.root, n, "summary.json"))
          and os.path.isfile(os.path.join(a.root, n, "ood.json"))]
  missing = [n for n in all_runs() if n not in done]
  print(f"{len(done)}/{len(all_runs())} runs finished and scored; missing: "
        f"{' '.join(missing) or 'none'}")
  if not done:
    return 1
  os.makedirs(a.out, exist_ok=True)

  # final.csv: launch.analyze's export.
  cmd = [sys.executable, "-m", "launch.analyze",
         "--workdir=" + ",".join(os.path.join(a.root, n) for n in done),
         "--group_by=seed_suffix", "--x=step", "--last=1", "--keys=" + ",".join(KEYS),
         "--columns=" + ",".join(COLUMNS), "--out=" + os.path.join(a.root, "analysis"),
         "--export=" + os.path.join(a.out, "final.csv")]
  subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
  _, final_rows = stats.read_seed_rows(os.path.join(a.out, "final.csv"))

  # ood.csv: the post-hoc scores.
  with open(os.path.join(a.root, "reference.json")) as f:
    ref = json.load(f)
  ood_rows = [{"arm": "reference", "run": "rl_reference", "seed": 0,
               **{c: ref[k] for k, c in OOD_COLUMNS.items()}}]
  scores = {}
  for n in done:
    with open(os.path.join(a.root, n, "ood.json")) as f:
      scores[n] = json.load(f)
    arm, seed = re.match(r"(.*)_s(\d+)$", n).groups()
    ood_rows.append({"arm": arm, "run": n, "seed": int(seed),
                     **{c: scores[n][k] for k, c in OOD_COLUMNS.items()}})
  stats.write_seed_rows(os.path.join(a.out, "ood.csv"), ood_rows, list(OOD_COLUMNS.values()))

  # criteria.csv: paired differences.
  per_run = {}
  for r in final_rows:
    per_run[r["run"]] = [r[c] for c in COLUMNS[:2]] + [
        scores[r["run"]]["ood/greedy"], abs(scores[r["run"]]["ood/greedy"] - ref["ood/greedy"]),
        r[COLUMNS[2]]]
  diff_rows = []
  for label, arm_a, arm_b in comparisons():
    for s in SEEDS:
      ra, rb = f"{arm_a}_s{s}", f"{arm_b}_s{s}"
      if ra in per_run and rb in per_run:
        # Rounded: accuracies are k/200, whose differences should read exactly (not 7e-18).
        d = np.round(np.asarray(per_run[ra]) - np.asarray(per_run[rb]), 12)
        diff_rows.append({"arm": label, "run": f"{ra} vs {rb}", "seed": s,
                          **dict(zip(DIFF_COLUMNS, d.tolist()))})
  stats.write_seed_rows(os.path.join(a.out, "criteria.csv"), diff_rows, DIFF_COLUMNS)

  for name in ("final", "ood", "criteria"):
    path = os.path.join(a.out, f"{name}.csv")
    columns, rows = stats.read_seed_rows(path)
    print(f"\n{path}:\n{stats.seed_table(rows, columns)}")

  # What each comparison shows (the page's decision rule): ">" / "<" when the interval of the
  # paired differences excludes 0, "·" otherwise.
  by_label: dict[str, list[dict]] = {}
  for r in diff_rows:
    by_label.setdefault(r["arm"], []).append(r)
  print("\norderings shown (> : interval above 0, < : below, · : none; n = pairs):")
  print("  " + " | ".join(("comparison",) + DIFF_COLUMNS))
  for label, rs in by_label.items():
    signs = []
    for c in DIFF_COLUMNS:
      m, h = stats.mean_ci([r[c] for r in rs])
      if len(rs) < 2:  # one pair: no interval
        signs.append("·")
      else:
        signs.append(">" if m - h > 0 else "<" if m + h < 0 else "·")
    print(f"  {label} (n={len(rs)}): " + "  ".join(signs))

  walls = []
  for n in done:
    tf = os.path.join(a.root, f"{n}.time")
    if os.path.isfile(tf):
      with open(tf) as f:
        m = re.search(r"([\d.]+) s wall", f.read())
      if m:
        walls.append(float(m.group(1)))
  if walls:
    print(f"\nwall time per run: median {np.median(walls):.0f} s, mean {np.mean(walls):.0f} s, "
          f"min {min(walls):.0f} s, "
          f"max {max(walls):.0f} s over {len(walls)} runs")
  return 0


if __name__ == "__main__":
  sys.exit(main())
