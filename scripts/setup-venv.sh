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
# nnU-Net's network package (runtime: TotalSegmentator / nnU-Net v2 source models) without its timm requirement:
# timm pulls torchvision and a CUDA torch, and the plain / residual-encoder U-Nets CervixTL rebuilds do not need it.
"$VPY" -m pip install -q einops "numpy>=1.24,<3"
"$VPY" -m pip install -q --no-deps "dynamic-network-architectures==0.4.4"
extras=""
if [ "${1:-}" = "--test" ]; then extras="[test]"; fi
"$VPY" -m pip install -q -e ".${extras}"
if [ "${1:-}" = "--test" ]; then
  # Real Slicer MRML libraries and Qt for the Slicer-module tests (see ../shared/slicer_api/README.md).
  "$VPY" -m pip install -q "slicer-core==5.13.31053.0" "PySide6-Essentials==6.12.0"
  # nnU-Net v2 itself, the reference the source-model fidelity tests compare against (again without timm).
  "$VPY" -m pip install -q "acvl-utils==0.2.6" "batchgenerators==0.25.5" "batchgeneratorsv2==0.3.6" blosc2 \
      graphviz imagecodecs nibabel pandas requests scikit-learn seaborn tifffile tqdm yacs
  "$VPY" -m pip install -q --no-deps "nnunetv2==2.8.1"
fi
