# Two entry points for a fresh machine: `make run` and `make test`.
# Installer output goes to .make/install.log (VERBOSE=1 shows it); a stamp skips reinstalling
# until pyproject.toml changes.
PYTHON ?= python
VERBOSE ?= 0
STAMP := .make
LOG := $(STAMP)/install.log

ifeq ($(VERBOSE),1)
  QUIET :=
else
  QUIET := >>$(LOG) 2>&1 || { echo "install failed; the last lines of $(LOG):"; tail -n 30 $(LOG); exit 1; }
endif

.PHONY: install install-run run test lint bench

$(STAMP)/run: pyproject.toml
	@mkdir -p $(STAMP); : > $(LOG)
	@echo "installing hfattr and its runtime dependencies (log: $(LOG)) ..."
	@$(PYTHON) -m pip install --disable-pip-version-check torch==2.13.0 $(QUIET)
	@$(PYTHON) -m pip install --disable-pip-version-check -e . $(QUIET)
	@touch $@

$(STAMP)/test: pyproject.toml
	@mkdir -p $(STAMP); : > $(LOG)
	@echo "installing hfattr with its test extra (log: $(LOG)) ..."
	@$(PYTHON) -m pip install --disable-pip-version-check torch==2.13.0 $(QUIET)
	@$(PYTHON) -m pip install --disable-pip-version-check -e ".[test]" $(QUIET)
	@touch $@ $(STAMP)/run

install-run: $(STAMP)/run

install: $(STAMP)/test

run: install-run
	@$(PYTHON) -m hfattr explain "the movie was wonderful but the ending was terrible"

test: install
	$(PYTHON) -m pytest -q -n 2

lint: install
	PYTHON=$(PYTHON) bash scripts/lint.sh

bench: install
	$(PYTHON) benchmarks/bench_ablation.py
