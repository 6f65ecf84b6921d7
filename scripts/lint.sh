#!/usr/bin/env bash
# Lint (ruff) and type check (mypy) with the settings in pyproject.toml; `make lint` runs this.
# Not yet part of .ci/run: it joins CI once every branch has merged and the whole tree is clean.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
"$PYTHON" -m ruff check .
"$PYTHON" -m ruff format --check tests/test_layout.py tests/test_extending.py hfattr/hf/heads.py \
    hfattr/methods/gradients.py
"$PYTHON" -m mypy
