#!/usr/bin/env bash
# Lint (ruff check), formatting (ruff format --check) and types (mypy), with the settings in
# pyproject.toml. `make lint` and CI (.ci/run) run this.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
"$PYTHON" -m ruff check .
"$PYTHON" -m ruff format --check .
"$PYTHON" -m mypy
