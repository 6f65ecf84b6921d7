#!/usr/bin/env bash
# Lint (ruff) and type check (mypy) with the settings in pyproject.toml; `make lint` runs this.
# Not yet part of .ci/run: it joins CI once every branch has merged and the whole tree is clean.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
"$PYTHON" -m ruff check .
# format is checked on the files written since the formatter was configured (older files are
# not reformatted in one sweep while other branches edit them)
"$PYTHON" -m ruff format --check hfattr/hf/heads.py hfattr/methods/input_x_gradient.py hfattr/methods/saliency.py \
    hfattr/methods/integrated_gradients.py tests/test_layout.py tests/test_extending.py tests/test_heads.py \
    tests/test_gradient_methods.py tests/test_names.py
"$PYTHON" -m mypy
