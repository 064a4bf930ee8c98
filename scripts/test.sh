#!/usr/bin/env bash
# The test command: set up .venv (if needed) and run the whole test suite.
# Slow tests run too; set CERVIXTL_SKIP_SLOW=1 to skip them, GPU tests skip themselves without CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh --test
export QT_QPA_PLATFORM=offscreen
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
set +e
"${CERVIXTL_VENV:-.venv}/bin/python" -m pytest Testing -q -rs "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then echo "no tests were collected" >&2; exit 1; fi
exit "$rc"
