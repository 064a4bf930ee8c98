#!/usr/bin/env bash
# The main job on the bundled default: the offline demo (phantom pelvic CT -> demo model contours -> protocol
# margins -> score, PNG overview), written to ./demo_out (or the folder given as $1).
# Sets up .venv only when it has no working engine yet (scripts/setup-venv.sh installs or updates it).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${CERVIXTL_VENV:-.venv}
if ! "$VENV/bin/python" -c "import cervixtl.cli" >/dev/null 2>&1 || [ ! -x "$VENV/bin/cervixtl" ]; then
  bash scripts/setup-venv.sh
fi
"$VENV/bin/cervixtl" demo --out "${1:-demo_out}"
