#!/usr/bin/env bash
# Set up and run the main job on the embedded default model (SmolLM2-135M-Instruct):
# 5 WVS-7 questions x 3 prompt styles x 3 methods (token, seq, text with 10 samples).
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
data=()
# Offline machines use the local mirror of the paper's data; elsewhere it is downloaded (pinned, checksummed).
[ -d ../shared/data ] && data=(--data-dir ../shared/data)
.venv/bin/valueprobe probe --model smollm2-135m-instruct --styles default,prefixed,one_shot \
  --methods token,seq,text --samples 10 --max-questions "${MAX_QUESTIONS:-5}" --out runs/quickstart "${data[@]}"
