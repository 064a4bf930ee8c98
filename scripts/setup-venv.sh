#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment .venv and install the engine with its dependencies.
# Usage: scripts/setup-venv.sh [--test]   (--test also installs pytest, slicer-core and PySide6 for the tests)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${CERVIXTL_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
VPY=$VENV/bin/python
"$VPY" -m pip install -q --upgrade pip >/dev/null
# The CPU build of PyTorch first (a plain 'torch' requirement would pull a multi-GB CUDA build).
if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
  "$VPY" -m pip install -q "torch==2.13.0"
fi
extras=""
if [ "${1:-}" = "--test" ]; then extras="[test]"; fi
"$VPY" -m pip install -q -e ".${extras}"
if [ "${1:-}" = "--test" ]; then
  # Real Slicer MRML libraries and Qt for the Slicer-module tests (see ../shared/slicer_api/README.md).
  "$VPY" -m pip install -q "slicer-core==5.13.31053.0" "PySide6-Essentials==6.12.0"
fi
