#!/usr/bin/env bash
# Lint and type checks (what .ci/run runs before the tests): ruff (pyflakes, pycodestyle, import order, bugbear,
# pyupgrade, simplify; configuration in pyproject.toml) on the engine, the modules, the tests and the
# benchmarks, and mypy on cervixtl/.
set -euo pipefail
cd "$(dirname "$0")/.."
VPY=${CERVIXTL_VENV:-.venv}/bin/python
"$VPY" -m ruff check cervixtl CervixTL CervixTLTraining Testing benchmarks setup.py
"$VPY" -m mypy
