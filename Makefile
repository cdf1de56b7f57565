# Two entry points for a fresh machine; each creates .venv on first use.
#   make demo   install and run the main job (a beta sweep on the embedded digits data)
#   make test   install and run lint, the test suite (less the tests marked slow) and the documentation site
#   make test-all   the same with the slow tests too
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test test-all lint docs clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[experiments,test]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/gdsoftmax sweep configs/digits_sweep.toml --out runs

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests bench mkdocs_hooks.py

# Two pytest workers of one thread each (pytest-xdist): most tests are small tensors and process start-ups, which
# one thread runs as fast as two, so two workers halve the wall time on 2 cores. One thread each matters: two
# workers of two OpenMP threads on 2 cores spin against each other and run several times slower than one worker.
WORKERS ?= 2
PYTEST := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m pytest -q -n $(WORKERS)

test: lint docs
	$(PYTEST) -m "not slow"

test-all: lint docs
	$(PYTEST)

# the documentation site: a broken link, anchor or API reference fails the build (--quiet would hide the warnings
# that --strict turns into a failure, so the build prints its INFO lines)
docs: $(BIN)/.installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs build --strict --site-dir build/site

clean:
	rm -rf $(VENV) build site src/*.egg-info
