#!/usr/bin/env bash
# The main job on the bundled default: set up .venv (if needed) and run the offline demo
# (phantom pelvic CT -> demo model contours -> protocol margins -> score, PNG overview) into ./demo_out.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh
"${CERVIXTL_VENV:-.venv}/bin/cervixtl" demo --out "${1:-demo_out}"
