# ICM book: build, test and reproduce. GNU make; every target installs what it needs into .venv.
#
#   make venv                      create .venv and install cdlib with the [book,test] extras
#   make book                      build the book (chapters executed, laptop profile), HTML in _build/html
#   make book-fresh                the same, re-executing every chapter (drops the execution cache)
#   make test                      unit tests + every notebooks/*.ipynb executed with nbval
#   make test-fast                 unit tests not marked slow (the edit-run loop; run make test before landing)
#   make grade [CDLIB_SOLUTIONS=solutions/]   grade exercise solutions (tests/test_exercises.py); a missing
#                                  answer fails. Stubs: python -m cdlib exercises init solutions/
#   make sync                      jupytext --sync book/ch*.md <-> notebooks/ch*.ipynb
#   make reproduce CHAPTER=ch03_bai2022 PROFILE=paper DEVICE=cuda DATA=/path [STEPS=N] [SET="k=v k2=v2"]
#                                  papermill -> results/<PROFILE>/chNN/<CHAPTER>.ipynb + its JSON; STEPS=N sets its *_steps
#   make checkpoints               build the checkpoint zoo (python -m cdlib zoo build)
#   make bench                     speed / memory / bits of every codec (python -m cdlib bench)
#   make site-check                screenshot and check every built page in headless Chromium
#   make clean                     remove _build and caches (keeps .venv and results/)

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Tools run from the venv first (the notebook kernel, jupytext, papermill).
export PATH := $(abspath $(VENV))/bin:$(PATH)

# make reproduce parameters
CHAPTER ?=
PROFILE ?= laptop
DEVICE ?= cpu
DATA ?=
STEPS ?=
SET ?=

# make grade: where the students' solutions are (empty: grade the reference solutions against independent oracles)
CDLIB_SOLUTIONS ?=

NBVAL_TIMEOUT ?= 600

.PHONY: help venv book book-fresh test test-fast grade sync reproduce checkpoints bench site-check clean

help:
	@sed -n '3,17p' Makefile | sed 's/^# \{0,1\}//'

# --------------------------------------------------------------------------- environment
$(STAMP): pyproject.toml
	@test -x $(PY) || { echo "creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install -e ".[book,test]"
	@touch $@

venv: $(STAMP)

# --------------------------------------------------------------------------- book
# -W: warnings are errors, -n: nitpicky (broken references), --keep-going: report them all.
# Execution (cache in _build/.jupyter_cache, laptop profile = the parameters-cell defaults) is
# configured in _config.yml.
book: $(STAMP)
	@start=$$(date +%s); \
	$(VENV)/bin/jupyter-book build . -W -n --keep-going; \
	echo "book built in $$(( $$(date +%s) - start )) s: _build/html/index.html"

# The execution cache is keyed on the notebook's content only: after a change in cdlib/, run this.
book-fresh: $(STAMP)
	rm -rf _build/.jupyter_cache _build/.doctrees _build/jupyter_execute
	$(MAKE) book

# --------------------------------------------------------------------------- tests
# nbval: every cell of every chapter notebook must run (outputs are not stored, so --nbval-lax;
# cells marked "# NBVAL_CHECK_OUTPUT" are compared). pytest exit code 5 = nothing collected.
test: $(STAMP)
	@rc=0; \
	$(PY) -m pytest tests -q || rc=$$?; \
	shopt -s nullglob; nbs=(notebooks/*.ipynb); \
	if (( $${#nbs[@]} == 0 )); then \
		echo "nbval: no notebooks in notebooks/, nothing to execute"; \
	else \
		nrc=0; \
		$(PY) -m pytest -q -p no:cacheprovider --nbval-lax --nbval-current-env \
			--nbval-cell-timeout=$(NBVAL_TIMEOUT) "$${nbs[@]}" || nrc=$$?; \
		if (( nrc == 5 )); then nrc=0; fi; \
		if (( nrc != 0 )); then rc=$$nrc; fi; \
	fi; \
	exit $$rc

test-fast: $(STAMP)
	$(PY) -m pytest tests -q -m "not slow"

grade: $(STAMP)
	@test -f tests/test_exercises.py || { echo "tests/test_exercises.py does not exist yet" >&2; exit 2; }
	CDLIB_SOLUTIONS="$(CDLIB_SOLUTIONS)" $(PY) -m pytest tests/test_exercises.py -q -rA

# --------------------------------------------------------------------------- notebooks
# Pairs are committed without outputs: after syncing, outputs that slipped into an .ipynb (someone
# ran it in Jupyter) are cleared.
sync: $(STAMP)
	@shopt -s nullglob; mds=(book/ch*.md); \
	if (( $${#mds[@]} == 0 )); then echo "no chapters in book/"; exit 0; fi; \
	$(VENV)/bin/jupytext --sync "$${mds[@]}"; \
	$(PY) -c "$$CLEAR_OUTPUTS" notebooks/ch*.ipynb

define CLEAR_OUTPUTS
import sys, nbformat
for path in sys.argv[1:]:
    nb = nbformat.read(path, as_version=4)
    # cells marked NBVAL_CHECK_OUTPUT keep their stored output: nbval compares it (scripts/store_checked_outputs.py)
    dirty = [c for c in nb.cells if c.cell_type == "code" and "NBVAL_CHECK_OUTPUT" not in c.source
             and (c.outputs or c.execution_count is not None)]
    for c in dirty:
        c.outputs, c.execution_count = [], None
    if dirty:
        nbformat.write(nb, path)
        print(f"cleared outputs of {len(dirty)} cell(s) in {path}")
endef
export CLEAR_OUTPUTS

reproduce: $(STAMP)
	@test -n "$(CHAPTER)" || { echo "usage: make reproduce CHAPTER=ch03_bai2022 PROFILE=paper DEVICE=cuda DATA=/path [STEPS=N] [SET='k=v ...']" >&2; exit 2; }
	$(PY) scripts/run_chapter.py "$(CHAPTER)" --profile "$(PROFILE)" --device "$(DEVICE)" \
		$(if $(DATA),--data "$(DATA)") $(if $(STEPS),--steps "$(STEPS)") $(foreach s,$(SET),--set "$(s)")

# --------------------------------------------------------------------------- library commands
checkpoints: $(STAMP)
	$(PY) -m cdlib zoo build

bench: $(STAMP)
	$(PY) -m cdlib bench

site-check: $(STAMP)
	$(PY) scripts/check_site.py

# --------------------------------------------------------------------------- cleanup
clean:
	rm -rf _build .pytest_cache
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +
	find . -path ./$(VENV) -prune -o -type d -name .ipynb_checkpoints -prune -exec rm -rf {} +
