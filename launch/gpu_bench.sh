#!/usr/bin/env bash
# The prepared GPU check of issue 6: `valueprobe bench` on a Llama-3.1-8B-shaped model with random
# bfloat16 weights: scoring MFU, decode tokens/s against the HBM roofline, and the HF-PyTorch
# reference procedure on the same GPU in the same run. Writes OUT_DIR/{gpu.txt,plan.txt,bench.json,
# bench.txt}. Sized to finish in under 8 minutes on one H100 (two compiles per shape bucket, a few
# timed repeats, the reference on fewer prompts).
#
#   launch/gpu_bench.sh [OUT_DIR]                    # installs .[cuda,test] into .venv first
#   INSTALL=0 PYTHON=python3 launch/gpu_bench.sh "$OUT"  # an image with jax[cuda], torch, transformers
#
# BENCH_ARGS adds flags to `valueprobe bench` (e.g. BENCH_ARGS="--prompts 16").
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/gpu_bench}
mkdir -p "$out"
py=${PYTHON:-.venv/bin/python}
if [ "${INSTALL:-1}" = 1 ]; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/python -m pip install -q -c constraints.txt -e ".[cuda,test]"
  py=.venv/bin/python
fi
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.85}  # room for torch too
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-1}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
vp() { "$py" -c 'import sys; from valueprobe_jax.cli import main; sys.exit(main(sys.argv[1:]))' "$@"; }

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$out/gpu.txt"
"$py" -c 'import jax, torch; d = jax.devices(); assert d[0].platform == "gpu", d; assert torch.cuda.is_available(); print("jax", jax.__version__, d, "| torch", torch.__version__)' | tee -a "$out/gpu.txt"
vp plan --model llama-3.1-8b --mesh data=1 --batch 8 --max-len 1024 | tee "$out/plan.txt"
# shellcheck disable=SC2086
# --random-model/--dtype: random bf16 weights of the registry architecture (the HF reference gets
# the same weights); the other flags exist in valueprobe bench today.
vp bench --random-model llama-3.1-8b --dtype bfloat16 --strategies packed,prefix_cache \
  --questions 8 --generation-prompts 4 --samples 10 --max-new-tokens 64 ${BENCH_ARGS:-} \
  --json --out "$out/bench.json" > "$out/bench.txt"
cat "$out/bench.txt"
