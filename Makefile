# Two entry points for a fresh machine: `make run` and `make test`.
PYTHON ?= python

.PHONY: install run test lint bench

install:
	$(PYTHON) -m pip install torch==2.13.0
	$(PYTHON) -m pip install -e ".[test]"

run: install
	$(PYTHON) -m hfattr explain "the movie was wonderful but the ending was terrible"

test: install
	$(PYTHON) -m pytest -q -n 2

lint:
	PYTHON=$(PYTHON) scripts/lint.sh

bench: install
	$(PYTHON) benchmarks/bench_ablation.py
