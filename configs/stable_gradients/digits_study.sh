#!/bin/bash
# The five-seed study of docs/reproductions/stable_gradients.md on non-stationary digits: the
# seven variants of configs/stable_gradients/ns_digits.py (5 seeds vmapped in one program
# each), then the page's two tables as per-seed CSVs.
#
#   bash configs/stable_gradients/digits_study.sh
#   python -m launch.analyze --data=docs/reproductions/data/stable_gradients/digits.csv
#
# A finished variant is not trained again (launch.train resumes it and only exports), so the
# script picks up after an interruption. ~20 min on the 2-core CPU with nothing else running,
# most of it the Kron variant (vmapped seeds pay its preconditioner refit every step).
set -euo pipefail
RUNS=${RUNS:-runs/repro/sg_digits5}
OUT=${OUT:-docs/reproductions/data/stable_gradients}
VARIANTS="plain4 plain8 plain12 multiskip1 multiskip3 multiskip5 plain12_kron"
declare -A LABEL=(
  [plain4]="plain, 4 layers" [plain8]="plain, 8 layers" [plain12]="plain, 12 layers"
  [multiskip1]="multi-skip + LN, k = 1" [multiskip3]="multi-skip + LN, k = 3"
  [multiskip5]="multi-skip + LN, k = 5" [plain12_kron]="plain, 12 layers + Kron"
)
workdirs=()
labels=()
for v in $VARIANTS; do
  python -m launch.train --config=configs/stable_gradients/ns_digits.py:$v \
    --workdir="$RUNS/$v" --config.num_seeds=5
  workdirs+=("$RUNS/$v")
  labels+=(--label="$v@sigreg=0,lr=0.001:${LABEL[$v]}")
done
mkdir -p "$OUT"
python -m launch.ns_phases --workdir="$(IFS=,; echo "${workdirs[*]}")" "${labels[@]}" \
  --export="$OUT/digits.csv" --export_phases="$OUT/digits_phase_ends.csv"
