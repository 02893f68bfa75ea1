#!/usr/bin/env bash
# Run a sweep on every worker of a Cloud TPU VM slice, then merge the hosts' result shards.
#
#   launch/tpu_pod.sh TPU_NAME ZONE CONFIG WORKDIR [valueprobe run args...]
#
#   launch/tpu_pod.sh vp-v5e-16 us-west4-a configs/robustness.py:qwen2.5-72b-instruct \
#       gs://my-bucket/rob-qwen72 --mesh fsdp=8,tensor=2
#   launch/tpu_pod.sh vp-v4-8 us-central2-b configs/robustness.py:llama-3.1-8b-instruct \
#       runs/rob-llama8b --mesh data=4 --config.model.dtype=bfloat16
#
# Every worker gets the committed code (git archive HEAD), installs it with the TPU extra into
# ~/valueprobe_jax/.venv and runs the same `valueprobe run` (VALUEPROBE_DISTRIBUTED=1: JAX's
# distributed runtime connects the workers). A mesh that fits one worker's chips (e.g. data=4 on
# 4-chip hosts) keeps each worker on its own work items; a larger one (fsdp=8,tensor=2 over
# 16 chips) runs the workers in lockstep. `valueprobe plan --model NAME` suggests the mesh.
#
# WORKDIR: gs://BUCKET/PATH is passed to `valueprobe run` as is: every worker writes its shards
# straight to the bucket (one object write per shard, atomic by itself; no gcsfuse, whose rename
# is copy + delete) and worker 0 merges them there. A TPU VM loses its disk when preempted, so use
# a bucket for long sweeps; rerun the same command to resume (a SIGTERM'd worker exits 143 after
# writing the chunk in hand). Any other path is local to each worker: the shards are copied back
# to ./runs/<basename of WORKDIR> on this machine and merged here (a relative WORKDIR is under
# each worker's home directory).
# Model weights must be on the workers: set REMOTE_ENV, e.g.
#   REMOTE_ENV="VALUEPROBE_MODEL_QWEN2_5_72B_INSTRUCT=/mnt/disks/models/qwen72" launch/tpu_pod.sh ...
# DRY_RUN=1 prints the gcloud commands instead of running them; WORKERS=N skips asking gcloud
# for the worker count.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 4 ]; then
  sed -n '2,12p' "$0" >&2
  exit 2
fi
tpu=$1 zone=$2 config=$3 workdir=$4
shift 4
extra=$(printf '%q ' "$@")
run() { if [ "${DRY_RUN:-0}" = 1 ]; then printf '%q ' "$@"; echo; else "$@"; fi; }
gc=(gcloud compute tpus tpu-vm)

# 1. ship the committed code to every worker
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
src=$tmp/valueprobe_src.tgz
git archive --format=tar.gz -o "$src" HEAD
run "${gc[@]}" scp "$src" "$tpu:valueprobe_src.tgz" --zone "$zone" --worker=all

# 2. install and run on every worker
remote_wd=$workdir
gcs_dep=""  # etils.epath reaches gs:// through fsspec's gcsfs
[[ $workdir == gs://* ]] && gcs_dep=" gcsfs"
if [[ $workdir != gs://* && $workdir != /* ]]; then
  remote_wd="\$HOME/$workdir"  # relative = under the worker's home
fi
remote="set -euo pipefail
mkdir -p ~/valueprobe_jax
find ~/valueprobe_jax -mindepth 1 -maxdepth 1 ! -name .venv -exec rm -rf {} +
tar xzf ~/valueprobe_src.tgz -C ~/valueprobe_jax && cd ~/valueprobe_jax
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -c constraints.txt -e '.[tpu]'$gcs_dep \
  -f https://storage.googleapis.com/jax-releases/libtpu_releases.html
export VALUEPROBE_DISTRIBUTED=1 ${REMOTE_ENV:-}
.venv/bin/valueprobe run --config $config --workdir $remote_wd --no-progress $extra"
run "${gc[@]}" ssh "$tpu" --zone "$zone" --worker=all --command "$remote"

# 3. merge the hosts' shards
if [[ $workdir == gs://* ]]; then
  run "${gc[@]}" ssh "$tpu" --zone "$zone" --worker=0 \
    --command "cd ~/valueprobe_jax && .venv/bin/valueprobe merge $remote_wd"
else
  local_dir=runs/$(basename "$workdir")
  mkdir -p "$local_dir/shards"
  workers=${WORKERS:-}
  if [ -z "$workers" ]; then
    ips=$("${gc[@]}" describe "$tpu" --zone "$zone" --format='value(networkEndpoints[].ipAddress)' \
          2>/dev/null || true)
    workers=$(printf '%s\n' "$ips" | tr ';,' '\n\n' | grep -c . || true)
    [ "${workers:-0}" -ge 1 ] || workers=1
  fi
  for ((w = 0; w < workers; w++)); do
    run "${gc[@]}" scp --recurse "$tpu:$workdir/shards/*" "$local_dir/shards/" --zone "$zone" --worker=$w
  done
  vp=valueprobe; [ -x .venv/bin/valueprobe ] && vp=.venv/bin/valueprobe
  run "$vp" merge "$local_dir"
fi
