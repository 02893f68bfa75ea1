#!/usr/bin/env bash
# Run a sweep on this machine's NVIDIA GPU(s) with JAX's CUDA backend, then merge its shards.
#
#   launch/local_gpu.sh CONFIG WORKDIR [valueprobe run args...]
#
#   launch/local_gpu.sh configs/robustness.py:llama-3.1-8b-instruct runs/rob-llama8b \
#       --config.model.dtype=bfloat16                   # one 80 GB H100 (see `valueprobe plan`)
#   launch/local_gpu.sh configs/robustness.py:qwen2.5-14b-instruct runs/rob-qwen14 \
#       --mesh tensor=2 --config.model.dtype=bfloat16    # two GPUs
#
# Installs the project with the CUDA extra into .venv (INSTALL=0 skips it and uses $PYTHON, e.g.
# an image that already has jax[cuda]); model weights resolve as everywhere (registry name ->
# VALUEPROBE_MODEL_<NAME> directory, or a checkpoint path as the model name).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 2 ]; then
  sed -n '2,10p' "$0" >&2
  exit 2
fi
config=$1 workdir=$2
shift 2
py=${PYTHON:-.venv/bin/python}
if [ "${INSTALL:-1}" = 1 ]; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -c constraints.txt -e ".[cuda]"
  py=.venv/bin/python
fi
# JAX preallocates 75% of GPU memory by default; the memory plan assumes 90% is usable.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.90}
export XLA_PYTHON_CLIENT_PREALLOCATE=${XLA_PYTHON_CLIENT_PREALLOCATE:-true}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-1}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
vp() { "$py" -c 'import sys; from valueprobe_jax.cli import main; sys.exit(main(sys.argv[1:]))' "$@"; }

nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader
"$py" -c 'import jax; d = jax.devices(); assert d[0].platform == "gpu", f"JAX sees no GPU: {d}"; print("JAX devices:", d)'
vp run --config "$config" --workdir "$workdir" "$@"
vp merge "$workdir"
