#!/usr/bin/env bash
# The test command: set up .venv (if needed), run ruff and mypy (scripts/lint.sh), then the whole test suite.
# Slow tests run too; set CERVIXTL_SKIP_SLOW=1 to skip them, GPU tests skip themselves without CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh --test
# Lint and type checks first (ruff and mypy come with the test extra): a finding fails the run before the tests.
bash scripts/lint.sh
# dciodvfy (Debian dicom3tools) validates the DICOM files we write; best effort, its tests skip without it.
if ! command -v dciodvfy >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && apt-get install -y -qq dicom3tools) >/dev/null 2>&1 || echo "note: dicom3tools not installed; DICOM validation tests will skip" >&2
fi
export QT_QPA_PLATFORM=offscreen
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
set +e
"${CERVIXTL_VENV:-.venv}/bin/python" -m pytest Testing -q -rs "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then echo "no tests were collected" >&2; exit 1; fi
exit "$rc"
