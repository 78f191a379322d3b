#!/bin/bash
# Paper 4's CPU study (docs/reproductions/groundcua.md, design written before the runs): for
# each seed, SFT of the tiny Qwen2.5-VL (configs/groundcua/sft_tiny.py), its held-out
# completions, RLOO from that SFT model (configs/groundcua/rl_tiny.py), its held-out
# completions; then one row per run and the paired RL - SFT differences, as CSVs for the page.
#
#   bash configs/groundcua/cpu_study.sh                 # seeds 0 1 2
#   SEEDS="1 2" bash configs/groundcua/cpu_study.sh     # some seeds
#   OUT=docs/reproductions/data/groundcua/rerun KEPT=docs/reproductions/data/groundcua/kept \
#     SEEDS="0 1 2 3 4" bash configs/groundcua/cpu_study.sh   # RL again from the kept SFT runs
#
# Every step resumes: a training run continues from its newest checkpoint (a finished one is
# scored and exported once more), so the same command picks up after an interruption. Each
# finished seed's rows are merged into the committed $OUT/study.csv at once (launch.analyze
# --data=A,B --export), and a seed whose rows are already there is skipped, so the seeds can be
# run in different sessions or on different machines (runs/ is not kept between them). A
# finished SFT run is kept under $KEPT/ (default $OUT/kept/: its exported model and held-out
# completions, without checkpoints, written by this script; commit it), and a kept run is copied into runs/
# and used as it is, so a seed whose SFT finished in one session can do its RL in the next. Time on
# the 2-core CPU with nothing else running: ~2.5 h of SFT (seed 0: 2 h 26 min) and ~25 min of
# RL per seed (config docstrings).
set -euo pipefail
SEEDS=${SEEDS:-"0 1 2"}
DATA=runs/groundcua_data
OUT=${OUT:-docs/reproductions/data/groundcua}
KEPT=${KEPT:-$OUT/kept}  # finished SFT runs: read from here if present, else trained and kept here
N=200  # every held-out instruction (40 screens x 5), the same rows for SFT and RL

if [ ! -f "$DATA/heldout/tasks.jsonl" ]; then
  python -m jaxlab.grounding.synthetic --out="$DATA/train" --num_screens=300 --seed=0 \
    --apps=0,1,2,3,4,5,6,7 --instructions_per_screen=10
  python -m jaxlab.grounding.synthetic --out="$DATA/heldout" --num_screens=40 --seed=1 \
    --apps=100,101,102,103 --instructions_per_screen=5
fi

# One digest of every data file (tasks and images), recorded beside a committed SFT run.
data_digest() {
  (cd "$DATA" && find . -type f | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -d' ' -f1)
}

mkdir -p "$OUT"
for s in $SEEDS; do
  sft=runs/groundcua_sft_s$s
  rl=runs/groundcua_rl_s$s
  if [ -f "$OUT/study.csv" ] && grep -q ",groundcua_rl_s$s," "$OUT/study.csv"; then
    echo "seed $s: its rows are already in $OUT/study.csv; skipped"
    continue
  fi
  kept="$KEPT/groundcua_sft_s$s"
  if [ -d "$kept" ] && [ ! -d "$sft/checkpoints" ]; then
    if [ "$(data_digest)" != "$(cat "$kept/data_sha256.txt")" ]; then
      echo "error: $DATA differs from the data $kept was trained on ($kept/data_sha256.txt);" \
        "regenerate it with this script's commands" >&2
      exit 2
    fi
    echo "seed $s: SFT run taken from $kept"
    rm -rf "$sft" && mkdir -p runs && cp -r "$kept" "$sft"
  else
    python -m launch.train --config=configs/groundcua/sft_tiny.py --workdir="$sft" \
      --config.seed="$s"
    python -m launch.eval --workdir="$sft" --evaluators=task_accuracy --num_examples=$N
    # Keep the finished SFT run (all but its checkpoints) for a later session's RL.
    rm -rf "$kept.tmp" && mkdir -p "$kept.tmp"
    cp -r "$sft"/config.json "$sft"/metrics.jsonl "$sft"/summary.json "$sft"/eval.json \
      "$sft"/eval_samples*.jsonl "$sft"/hf_model "$sft"/tokenizer "$kept.tmp"/
    if [ -f "$sft/starts.jsonl" ]; then cp "$sft/starts.jsonl" "$kept.tmp"/; fi  # which code ran
    data_digest > "$kept.tmp/data_sha256.txt"
    rm -rf "$kept" && mv "$kept.tmp" "$kept"
    echo "seed $s: SFT run kept in $kept (commit it)"
  fi
  python -m launch.train --config=configs/groundcua/rl_tiny.py --workdir="$rl" \
    --config.seed="$s" --config.model.init="$sft/hf_model"
  python -m launch.eval --workdir="$rl" --evaluators=task_accuracy --num_examples=$N
  python -m launch.analyze --kind=groundcua_study --tasks="$DATA/heldout/tasks.jsonl" \
    --workdir="$sft,$rl" --out="runs/groundcua_study_s$s" --export="runs/groundcua_study_s$s.csv"
  if [ -f "$OUT/study.csv" ]; then
    python -m launch.analyze --data="$OUT/study.csv,runs/groundcua_study_s$s.csv" \
      --export="$OUT/study.csv"
  else
    cp "runs/groundcua_study_s$s.csv" "$OUT/study.csv"
  fi
done

python -m launch.analyze --data="$OUT/study.csv" --paired=groundcua_sft --export="$OUT/paired.csv"
echo "done: $OUT/study.csv, $OUT/paired.csv"
