#!/bin/bash
# Paper 1's one-GPU run (spec looped_grounding_kaleidoscope.md §1.7): the miniature Huginn of
# configs/looped/grid.py:gpu_sandwich_concat, its feed-forward baseline, and the quick ablations
# at width 256 (injection none / add, block size R = 1, pre-norm), each trained then analysed at
# trip counts up to 8x the trained mean. Two parts, so that each fits one device call:
#
#   OUT=/path/to/results bash configs/looped/gpu.sh main        # default OUT: runs/looped_gpu
#   OUT=/path/to/results bash configs/looped/gpu.sh ablations
#   SMOKE=1 bash configs/looped/gpu.sh main                     # the same path on a CPU, tiny
#
# main: gpu_sandwich_concat and gpu_feedforward (the config's 3,000 steps each, or $STEPS), the
# looped run analysed against the feed-forward one at trip counts 8-64. ablations: gpu256_<arm>
# for sandwich_concat, prenorm_none, add, core1 and feedforward (the config's 1,000 steps
# each), the four looped ones analysed against the feed-forward one. Then the study's criteria per run, as in
# docs/reproductions/looped.md's commands: criteria.csv (the looped runs) and stages.csv (with
# the feed-forward run). Run directories (checkpoints, exported models, full analyses) go to
# $RUNS; $OUT gets at most 6 small files (a device call brings back 8): device.txt, log.txt
# (every command's output, appended as it runs, so a run stopped at its limit still shows how
# far it got and its steps/s), criteria.csv, stages.csv, table.md (both tables) and
# analysis.tgz (each analysis's metrics.json and plots, and the study's tables and plots,
# without the captured states). No GPU has run this: the first run's steps/s in log.txt says
# whether $STEPS fits; pass STEPS=<n>. A part run again resumes its runs (a finished one is
# exported once more) and redoes its analyses. SMOKE=1 (4 steps, width 32, 2 prompts at trip
# counts 8 and 16) took 1:45 (main) and 4:40 (ablations) on the 2-core CPU.
set -euo pipefail
PART=${1:-main}
OUT=${OUT:-runs/looped_gpu}
RUNS=${RUNS:-runs/looped_gpu_runs}
STEPS=${STEPS:-}  # main's step count when set; otherwise configs/looped/grid.py's
SEED=${SEED:-0}
SMOKE=${SMOKE:-0}
mkdir -p "$OUT" "$RUNS"
LOG=$OUT/log.txt
: > "$LOG"
{ nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || true
  python -c "import jax; print(jax.devices())"; } > "$OUT/device.txt"

TRIPS=8,16,32,64
NPROMPTS=32
X=()
if [ "$SMOKE" = 1 ]; then
  TRIPS=8,16  # the study needs a trip count >= 2 r-bar
  NPROMPTS=2
  X=(--config.steps=4 --config.model.hidden_size=32 --config.model.intermediate_size=64
     --config.model.num_heads=2 --config.model.num_kv_heads=2 --config.model.head_dim=16
     --config.batch_size=4 --config.log_every=1 --config.eval.every=2
     --config.checkpoint.every=2 --config.eval.num_examples=4 --config.eval.batch_size=4)
fi

train() {  # arm, then overrides
  echo "== train $*" >> "$LOG"
  python -m launch.train --config="configs/looped/grid.py:$1" \
    --workdir="$RUNS/$1_s$SEED" --config.seed="$SEED" "${@:2}" ${X[@]+"${X[@]}"} \
    >> "$LOG" 2>&1
}
analyze() {  # arm, feed-forward arm
  echo "== analyze $1 against $2" >> "$LOG"
  python -m launch.analyze --kind=looped --workdir="$RUNS/$1_s$SEED" \
    --baseline="$RUNS/$2_s$SEED" --prompts=data/looped/pointer_chase_eval.jsonl \
    --num_prompts="$NPROMPTS" --iterations="$TRIPS" --out="$RUNS/$1_s$SEED/analysis" \
    >> "$LOG" 2>&1
}
tables() {  # looped run dirs (comma-separated), feed-forward run dir, this part's arm prefix
  echo "== tables" >> "$LOG"
  python -m launch.analyze --kind=looped_study --out="$RUNS/study_$PART" --workdir="$1" \
    --keys=eval_accuracy,fixed_share_at_2rbar,min_slot_distance,pca_retrace,tv_delta_corr,drifting_share_at_max,norm_growth \
    --export="$OUT/criteria.csv" >> "$LOG" 2>&1
  cp "$RUNS/study_$PART/table.md" "$OUT/table.md"
  python -m launch.analyze --kind=looped_study --out="$RUNS/study_${PART}_stages" \
    --workdir="$1,$2" --keys=eval_accuracy,periodicity_entropy,periodicity_bos_norm \
    --export="$OUT/stages.csv" >> "$LOG" 2>&1
  { echo; cat "$RUNS/study_${PART}_stages/table.md"; } >> "$OUT/table.md"
  # Each analysis's metrics and plots and the study's plots; the captured states (results.npz)
  # stay in $RUNS.
  (cd "$RUNS" && find . \( -path "./$3*/analysis/*" -o -path "./study_$PART*" \) \
    ! -name '*.npz' -type f -print0 | tar --null -czf - -T -) > "$OUT/analysis.tgz"
}

case "$PART" in
main)
  train gpu_sandwich_concat ${STEPS:+--config.steps="$STEPS"}
  train gpu_feedforward ${STEPS:+--config.steps="$STEPS"}
  analyze gpu_sandwich_concat gpu_feedforward
  tables "$RUNS/gpu_sandwich_concat_s$SEED" "$RUNS/gpu_feedforward_s$SEED" gpu_
  ;;
ablations)
  looped=()
  for arm in sandwich_concat prenorm_none add core1 feedforward; do
    train "gpu256_$arm"
  done
  for arm in sandwich_concat prenorm_none add core1; do
    analyze "gpu256_$arm" gpu256_feedforward
    looped+=("$RUNS/gpu256_${arm}_s$SEED")
  done
  tables "$(IFS=,; echo "${looped[*]}")" "$RUNS/gpu256_feedforward_s$SEED" gpu256_
  ;;
*)
  echo "error: configs/looped/gpu.sh: part '$PART' is not main or ablations" >&2
  exit 2
  ;;
esac
rm -rf "$RUNS"/*/checkpoints  # the exported hf_model/ is what the analysis and the doc need
echo "done: $PART -> $OUT" | tee -a "$LOG"
