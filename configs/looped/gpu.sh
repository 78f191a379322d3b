#!/bin/bash
# Paper 1's one-GPU run (spec looped_grounding_kaleidoscope.md §1.7): the miniature Huginn of
# configs/looped/grid.py:gpu_sandwich_concat, its feed-forward baseline, and the quick ablations
# at width 256 (injection none / add, block size R = 1, pre-norm), each trained then analysed at
# trip counts up to 8x the trained mean. One command on the device machine:
#
#   OUT=/path/to/results bash configs/looped/gpu.sh        # default OUT: runs/looped_gpu
#
# Each run writes its training log and summary; each analysis writes results.npz, metrics.json
# and its PNGs under <run>/analysis (what docs/reproductions/looped.md reads). The first run's
# log gives the step time: if 3,000 steps will not fit, pass STEPS=<n> for the big model.
set -euo pipefail
OUT=${OUT:-runs/looped_gpu}
STEPS=${STEPS:-3000}
SEED=${SEED:-0}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$OUT/device.txt" 2>/dev/null || true
python -c "import jax; print(jax.devices())" >> "$OUT/device.txt"

train() {  # arm, steps
  python -m launch.train --config="configs/looped/grid.py:$1" --workdir="$OUT/$1" \
    --config.seed="$SEED" --config.steps="$2" 2>&1 | tail -n 20 > "$OUT/$1.log"
}
analyze() {  # arm, baseline arm, trip counts
  python -m launch.analyze --kind=looped --workdir="$OUT/$1" --baseline="$OUT/$2" \
    --prompts=data/looped/pointer_chase_eval.jsonl --num_prompts=32 --iterations="$3" \
    --out="$OUT/$1/analysis" > "$OUT/$1/analysis.log" 2>&1
}

train gpu_sandwich_concat "$STEPS"
train gpu_feedforward "$STEPS"
analyze gpu_sandwich_concat gpu_feedforward 8,16,32,64
for arm in sandwich_concat prenorm_none add core1 feedforward; do
  train "gpu256_$arm" 1000
done
for arm in sandwich_concat prenorm_none add core1; do
  analyze "gpu256_$arm" gpu256_feedforward 8,16,32,64
done
rm -rf "$OUT"/*/checkpoints  # the exported hf_model/ is what the analysis and the doc need
echo "done: $OUT"
