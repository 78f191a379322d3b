#!/usr/bin/env bash
# Runs every prepared device command at its smoke size on this CPU, in a Python 3.12 environment
# that holds only what the GPU machines' image holds (at the versions its pip list gives) plus the
# archive of benchmarks/device/pack_site.sh: what a device call will import, checked before any
# device time is spent. Needs a Python 3.12 interpreter and PyPI.
#
#   PYTHON312=/path/to/python3.12 bash benchmarks/device/image_env_check.sh
#
# The environment is made once in .image_env/ (git-ignored), the archive is packed if
# missing, then one line per command: its name, exit status and seconds; each command's output
# is in runs/image_env_check/<name>.log; the exit status is 0 only if every command's was.
# Measured 2026-12-06 on the 2-core CPU, a test run sharing it: the environment ~3 min, then
# every command exit 0 in 28-418 s (the groundcua pipeline the longest), ~23 min in all.
set -uo pipefail
cd "$(dirname "$0")/../.."
PYTHON312=${PYTHON312:-python3.12}
ENV=.image_env
if [ ! -x "$ENV/bin/python" ]; then
  if ! "$PYTHON312" -m venv "$ENV"; then
    echo "error: PYTHON312=$PYTHON312 could not make a virtual environment (Python 3.12?)" >&2
    exit 2
  fi
  # The image's versions where its pip list gives them (device tool, KINDS.md); the others are
  # in the image without a recorded version, so PyPI's current release stands in for them.
  "$ENV/bin/pip" install -q jax==0.11.2 jaxlib==0.11.2 flax==0.12.10 numpy==2.5.2 \
    transformers==5.17.0 tokenizers==0.23.2 safetensors==0.8.0 huggingface-hub==1.33.0 \
    optax orbax-checkpoint chex absl-py etils scipy matplotlib pillow tensorboard pyyaml tqdm \
    lxml scikit-learn pandas pyarrow fsspec msgpack tensorstore protobuf typing-extensions six \
    seaborn imageio psutil rich jinja2 regex requests xxhash einops || exit 2
fi
[ -f .device_site.tar.gz ] || bash benchmarks/device/pack_site.sh || exit 2
# shellcheck disable=SC1091
. "$ENV/bin/activate"
source benchmarks/device/site.sh || exit 2
LOGS=runs/image_env_check
SCRATCH=$(mktemp -d)
rm -rf "$LOGS" && mkdir -p "$LOGS"
failed=0
run() {
  local name=$1 t0 rc
  shift
  t0=$(date +%s)
  "$@" > "$LOGS/$name.log" 2>&1
  rc=$?
  [ "$rc" = 0 ] || failed=1
  echo "$name exit=$rc $(( $(date +%s) - t0 ))s"
}
# perf.py exits 0 whatever its parts did (a failed part is a NaN in its report): read its
# perf.json and fail unless every part it ran ended "ok".
perf_smoke() {
  python benchmarks/device/perf.py --out="$SCRATCH/perf" --smoke || return
  python - "$SCRATCH/perf/perf.json" <<'PY'
import json, sys
parts = json.load(open(sys.argv[1]))["parts"]
bad = {n: p["status"] for n, p in parts.items() if p["status"] not in ("ok", "skipped")}
if bad:
  sys.exit(f"perf.py parts not ok: {bad}")
PY
}
run perf perf_smoke
# The GPU sizes of perf.py also run brax's SAC and PPO (left out at smoke size): tiny here.
run sac_vs_brax python benchmarks/sac_vs_brax.py --env=CartpoleBalance --total_steps=96 \
  --num_envs=4 --batch_size=16 --grad_updates_per_step=1 --min_replay_size=32 \
  --max_replay_size=1024 --hidden=16 --episode_length=20 --num_evals=3 --num_eval_envs=2 \
  --profile_step=0
run ppo_vs_brax python benchmarks/ppo_vs_brax.py --total_steps=64 --num_envs=4 \
  --unroll_length=4 --batch_size=2 --num_minibatches=2 --num_epochs=1 --episode_length=20 \
  --num_evals=3 --num_eval_envs=2 --repeats=1 --no-phases
for study in sigreg stable_gradients grama least asyppo; do
  run "study_$study" python benchmarks/device/studies.py --study="$study" --smoke \
    --out="$SCRATCH/$study" --workdir="$SCRATCH/runs_$study"
done
for part in throughput pipeline; do
  run "groundcua_$part" env OUT="$SCRATCH/groundcua_$part" RUNS="$SCRATCH/groundcua_runs" \
    SMOKE=1 bash configs/groundcua/gpu.sh "$part"
done
run looped_main env OUT="$SCRATCH/looped" RUNS="$SCRATCH/looped_runs" SMOKE=1 \
  bash configs/looped/gpu.sh main
rm -rf "$SCRATCH"
exit $failed
