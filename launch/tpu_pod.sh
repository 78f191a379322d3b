#!/usr/bin/env bash
# Run the same jaxlab command on every worker of a Cloud TPU pod slice.
#
#   launch/tpu_pod.sh TPU_NAME ZONE -- python -m launch.train --config=configs/... --workdir=gs://...
#
# Each worker runs the command with --multihost appended, so launch.train calls
# jax.distributed.initialize() (which discovers the coordinator on TPU VMs) before anything
# else; the mesh then spans every chip of the slice. The repo is expected at the same path on
# every worker (e.g. cloned by a startup script); set JAXLAB_DIR to override (default: ~/jaxlab).
#
# The workdir must be one every worker sees (gs://, or a shared filesystem): process 0 writes the
# run's files and every worker writes its shards of the checkpoints. The same command run
# again resumes. GPU clusters (SLURM srun) and one machine (launch/local_cluster.py): see the
# README, "Multi-host".
set -euo pipefail
if [[ $# -lt 4 || "$3" != "--" ]]; then
  echo "usage: $0 TPU_NAME ZONE -- COMMAND..." >&2
  exit 2
fi
tpu="$1"; zone="$2"; shift 3
dir="${JAXLAB_DIR:-~/jaxlab}"
cmd="cd $dir && . .venv/bin/activate && $(printf '%q ' "$@") --multihost"
exec gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" --worker=all --command="$cmd"
