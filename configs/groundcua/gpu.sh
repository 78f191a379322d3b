#!/bin/bash
# Paper 4 on one GPU (spec looped_grounding_kaleidoscope.md §2.7 and issue 12): the CPU study's
# pipeline at the GPU sizes, and the throughput of a Qwen2.5-VL-3B-shaped model. Two parts, so
# that each fits one device call:
#
#   OUT=/path/to/results bash configs/groundcua/gpu.sh pipeline     # default OUT: runs/groundcua_gpu
#   OUT=/path/to/results bash configs/groundcua/gpu.sh throughput
#   SMOKE=1 bash configs/groundcua/gpu.sh pipeline                  # the same path on a CPU, tiny
#
# pipeline: 2,000 synthetic screens at 896x560 of 8 apps, 25 instructions each (50K), and 500
# held-out instructions on 100 screens of 4 other apps (every element is >= 24 px at this size,
# so the size criterion of docs/reproductions/groundcua.md has rows); SFT of the §2.7 GPU model
# (configs/groundcua/sft_tiny.py:gpu, 1,000 steps of 64 rows, bfloat16); its held-out
# completions; RLOO from it (configs/groundcua/rl_tiny.py:gpu, 100 steps of 32 prompts x 8);
# its held-out completions; the study's CSVs (one row per run and RL - SFT) in $OUT. The step
# counts are a guess (no GPU has run this): the SFT log's steps/s says whether they fit.
# throughput: one SFT step of the Qwen2.5-VL-3B shape with one 812x1288 screenshot per
# 2,048-token row (benchmarks/llm_train_mfu.py, its MFU), and greedy rollouts of the same shape
# with one 560x560 image per prompt at batch 32 and 8 (benchmarks/vlm_generate_vs_transformers.py,
# ours only; issue 11), each with its decode steps' share of the HBM roofline (the bandwidth
# from the device kind; an unknown card ends the part with one error line naming it).
# Each part leaves at most 7 small files in $OUT (a device call brings back 8): pipeline:
# device.txt, log.txt, study.txt, study.csv, paired.csv, sft_metrics.jsonl, rl_metrics.jsonl;
# throughput: device.txt, sft_step_3b.txt, rollout_3b_b32.txt, rollout_3b_b8.txt. Run
# directories go to $RUNS.
set -euo pipefail
PART=${1:-pipeline}
OUT=${OUT:-runs/groundcua_gpu}
RUNS=${RUNS:-runs/groundcua_gpu_runs}  # run directories (checkpoints, models): kept out of $OUT
SEED=${SEED:-0}
SMOKE=${SMOKE:-0}
DATA=runs/groundcua_gpu_data  # what sft_tiny.py:gpu and rl_tiny.py:gpu read
mkdir -p "$OUT"
{ nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || true
  python -c "import jax; print(jax.devices())"; } > "$OUT/device.txt"

if [ "$SMOKE" = 1 ]; then
  SCREENS=(8 4); PER=(5 2); N=4
  SFT_X=(--config.steps=2 --config.batch_size=2 --config.log_every=1 --config.checkpoint.every=0
         --config.eval.num_examples=4 --config.eval.batch_size=4 --config.eval.max_new_tokens=8)
  RL_X=(--config.steps=2 --config.prompts_per_step=2 --config.group_size=2 --config.log_every=1
        --config.sampling.max_new_tokens=8 --config.checkpoint.every=0
        --config.eval.num_examples=4 --config.eval.batch_size=4 --config.eval.max_new_tokens=8)
  MFU=(--preset=tiny_vl --steps=1 --warmup=1 --peak_tflops=1)
  GEN=(--skip_torch --max_new_tokens=4 --repeats=1 --device_report --hbm_bandwidth=0)
  BATCHES=(3 2)
else
  SCREENS=(2000 100); PER=(25 5); N=500
  SFT_X=(); RL_X=()
  MFU=(--preset=qwen25vl_3b --batch_size=8 --seq_len=2048 --remat)
  GEN=(--skip_torch --max_new_tokens=64 --dtype=bfloat16 --repeats=2 --device_report
       --hbm_bandwidth=-1
       --hidden=2048 --layers=36 --heads=16 --kv_heads=2 --intermediate=11008 --vocab=151936
       --vision_hidden=1280 --vision_depth=32 --vision_heads=16 --vision_intermediate=3420
       --image_min=560 --image_max=560)
  BATCHES=(32 8)
fi

case "$PART" in
pipeline)
  # A smoke run's few screens must not stand in for the real data (or the reverse).
  if [ -f "$DATA/heldout/tasks.jsonl" ] && [ "$SMOKE" != "$(cat "$DATA/smoke" 2>/dev/null || echo 0)" ]; then
    echo "error: $DATA holds data of the other mode (SMOKE=$SMOKE now); remove it first" >&2
    exit 2
  fi
  if [ ! -f "$DATA/heldout/tasks.jsonl" ]; then
    python -m jaxlab.grounding.synthetic --out="$DATA/train" --num_screens="${SCREENS[0]}" \
      --seed=0 --apps=0,1,2,3,4,5,6,7 --sizes=896x560 --instructions_per_screen="${PER[0]}"
    python -m jaxlab.grounding.synthetic --out="$DATA/heldout" --num_screens="${SCREENS[1]}" \
      --seed=1 --apps=100,101,102,103 --sizes=896x560 --instructions_per_screen="${PER[1]}"
    echo "$SMOKE" > "$DATA/smoke"
  fi
  sft=$RUNS/groundcua_sft_s$SEED
  # SFT, its evaluation, RLOO, its evaluation, in that order, written as they run (not through
  # a pipe), so that a call stopped at its time limit still brings back how far each got.
  LOG=$OUT/log.txt
  rl=$RUNS/groundcua_rl_s$SEED
  python -m launch.train --config=configs/groundcua/sft_tiny.py:gpu --workdir="$sft" \
    --config.seed="$SEED" ${SFT_X[@]+"${SFT_X[@]}"} > "$LOG" 2>&1
  python -m launch.eval --workdir="$sft" --evaluators=task_accuracy --num_examples=$N \
    >> "$LOG" 2>&1
  python -m launch.train --config=configs/groundcua/rl_tiny.py:gpu --workdir="$rl" \
    --config.seed="$SEED" --config.model.init="$sft/hf_model" ${RL_X[@]+"${RL_X[@]}"} \
    >> "$LOG" 2>&1
  python -m launch.eval --workdir="$rl" --evaluators=task_accuracy --num_examples=$N \
    >> "$LOG" 2>&1
  python -m launch.analyze --kind=groundcua_study --tasks="$DATA/heldout/tasks.jsonl" \
    --workdir="$sft,$rl" --out="$RUNS/study" --export="$OUT/study.csv" > "$OUT/study.txt"
  python -m launch.analyze --data="$OUT/study.csv" --paired=groundcua_sft \
    --export="$OUT/paired.csv" >> "$OUT/study.txt"
  cp "$sft/metrics.jsonl" "$OUT/sft_metrics.jsonl"
  cp "$rl/metrics.jsonl" "$OUT/rl_metrics.jsonl"
  ;;
throughput)
  python -m benchmarks.llm_train_mfu "${MFU[@]}" > "$OUT/sft_step_3b.txt" 2>&1
  for b in "${BATCHES[@]}"; do
    python -m benchmarks.vlm_generate_vs_transformers "${GEN[@]}" --batch="$b" \
      > "$OUT/rollout_3b_b$b.txt" 2>&1
  done
  ;;
*)
  echo "error: configs/groundcua/gpu.sh: part '$PART' is not pipeline or throughput" >&2
  exit 2
  ;;
esac
echo "done: $PART -> $OUT"
