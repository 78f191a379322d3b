#!/usr/bin/env bash
# The KL-estimator sweep of issue 16 (docs/reproductions/kl_estimators.md, "Rerun: three β, five
# seeds, an out-of-domain split"): rows none (β = 0), R1, L3, R5 of configs/kl_estimators/rloo.py
# at β ∈ {0.05, 0.1, 0.3}, seeds 0-4, the on-policy 80-step setting; 50 runs, one at a time.
#
#   nohup bash configs/kl_estimators/sweep.sh > runs/kl_sweep.log 2>&1 &   # rerun to resume
#
# Each run is runs/kl_sweep/<row>_b<β>_s<seed> (the no-KL control: none_b0_s<seed>) and is
# skipped once its summary.json exists (an interrupted run resumes from its checkpoint). After
# each seed's block, configs/kl_estimators/score_ood.py writes ood.json into every finished run
# that lacks one (greedy accuracy on the in-domain and the out-of-domain split). Order: β ∈ {0.05, 0.3} and the control for every
# seed first (seed by seed, so a partial sweep has every cell at the same seed count), then
# β = 0.1. Per run: wall time and /proc/loadavg in runs/kl_sweep/<run>.time and the log.
# Needs the reference runs/rl_reference/hf_model (configs/llm/sft_rl_reference.py, both stages).
set -uo pipefail
ROOT=${KL_SWEEP_ROOT:-runs/kl_sweep}
SEEDS=${KL_SWEEP_SEEDS:-"0 1 2 3 4"}
CFG=configs/kl_estimators/rloo.py
mkdir -p "$ROOT"
log() { echo "[$(date +%F' '%H:%M:%S)] $*"; }

if [ ! -f runs/rl_reference/hf_model/config.json ]; then
  log "no runs/rl_reference/hf_model: train the reference first (configs/llm/sft_rl_reference.py)"
  exit 2
fi
if [ ! -f "$ROOT/reference.json" ]; then
  log "scoring the reference"
  python configs/kl_estimators/score_ood.py --model=runs/rl_reference/hf_model \
    --out="$ROOT/reference.json" || log "reference scoring FAILED"
fi

one() {  # row beta seed
  local row=$1 beta=$2 seed=$3 name dir
  name=${row}_b${beta}_s${seed}
  dir=$ROOT/$name
  if [ ! -f "$dir/summary.json" ]; then
    log "start $name (load $(cut -d' ' -f1-3 /proc/loadavg))"
    local t0=$SECONDS coef=()
    [ "$row" != none ] && coef=(--config.pg.kl.coef="$beta")
    /usr/bin/time -f "%e s wall, %U s user, %S s sys, max RSS %M kB" -o "$dir.time" \
      python -m launch.train --config=$CFG:"$row" --workdir="$dir" --config.seed="$seed" \
        "${coef[@]}" > "$dir.log" 2>&1
    local rc=$?
    echo "load after: $(cat /proc/loadavg)" >> "$dir.time"
    if [ $rc -ne 0 ] || [ ! -f "$dir/summary.json" ]; then
      log "FAILED $name (rc $rc; see $dir.log)"
      return
    fi
    log "done $name in $((SECONDS - t0)) s (load $(cut -d' ' -f1-3 /proc/loadavg))"
  fi
}

score() {  # every finished run without ood.json, in one process (one compile)
  python configs/kl_estimators/score_ood.py "$ROOT"/*_s[0-9] >> "$ROOT/score_ood.log" 2>&1 \
    || log "scoring FAILED (see $ROOT/score_ood.log)"
}

for seed in $SEEDS; do
  one none 0 "$seed"
  for row in R1 L3 R5; do
    for beta in 0.05 0.3; do one $row $beta "$seed"; done
  done
  score
done
for seed in $SEEDS; do
  for row in R1 L3 R5; do one $row 0.1 "$seed"; done
  score
done
log "sweep complete"
