#!/usr/bin/env bash
# The RSA reproduction (docs/reproductions/rsa.md) for one seed: every stage of
# configs/rsa/study.py in order, each skipped when its output exists (rerun to resume).
#   for s in 0 1 2 3 4; do bash configs/rsa/study.sh $s; done   # 14-20 min per seed, 2 CPU cores
#   python -m jaxlab.llm.rsa_study table --study=runs/rsa_study \
#       --export=docs/reproductions/data/rsa --plot=docs/reproductions/img/rsa.png
set -euo pipefail
SEED=${1:?usage: configs/rsa/study.sh SEED}
ROOT=runs/rsa_study
DIR=$ROOT/s$SEED
CFG=configs/rsa/study.py
TRAIN=data/llm/spell_backward_rsa_train.jsonl
EVAL=data/llm/spell_backward_rsa_eval.jsonl
mkdir -p "$DIR" "$ROOT/data"
log() { echo "[$(date +%H:%M:%S)] seed $SEED: $*"; }

NOISY=$ROOT/data/spell_backward_rsa_sft_noisy.jsonl
if [ ! -f "$NOISY" ]; then
  log "noisy SFT rows"
  python -m jaxlab.llm.tasks --task=spell_backward --n=3000 --seed=3 \
    --difficulty=min_word_len=7,max_word_len=8 --metadata_keys=word \
    --question_format='{metadata[word]}=' --exclude=$EVAL --corrupt=0.4 \
    --corrupt_mode=letters --corrupt_seed=0 --corrupt_copies=6 --out="$NOISY"
fi

train() {  # stage
  if [ ! -f "$DIR/$1/hf_model/config.json" ]; then
    log "train $1"
    python -m launch.train --config=$CFG:$1,$SEED --workdir="$DIR/$1" > "$DIR/$1.log" 2>&1
  fi
}

candidates() {  # model, out file, seed offset: aggregation rows over K = 4 of the model's samples
  if [ ! -f "$2" ]; then
    log "candidates from $1 -> $2"
    python -m launch.rsa --model="$DIR/$1/hf_model" --task=$TRAIN --config=$CFG:rsa,$SEED \
      --config.seed=$((SEED + $3)) --config.generation.batch_size=1024 --rl_data="$2"
  fi
}

train base
candidates base "$DIR/agg_rows_a.jsonl" 1000
candidates base "$DIR/agg_rows_b.jsonl" 2000
if [ ! -f "$DIR/agg_sft.jsonl" ]; then
  python -m jaxlab.llm.rsa_study teacher --rows="$DIR/agg_rows_a.jsonl" \
    --rows="$DIR/agg_rows_b.jsonl" --out="$DIR/agg_sft.jsonl"
fi
train agg
candidates agg "$DIR/rl_rows.jsonl" 3000
train rl_plain
train rl_agg
train rl_plain_short
train rl_agg_short

for model in base agg rl_plain rl_agg rl_plain_short rl_agg_short; do
  if [ ! -f "$DIR/${model}_rsa/results.json" ]; then
    log "RSA of $model"
    python -m launch.rsa --model="$DIR/$model/hf_model" --task=$EVAL --config=$CFG:rsa,$SEED \
      --workdir="$DIR/${model}_rsa" > "$DIR/${model}_rsa.log" 2>&1
  fi
done
log "done"
