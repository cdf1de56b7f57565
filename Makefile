# Two entry points for a fresh machine; each creates .venv on first use.
#   make demo   install and run the main job (a beta sweep on the embedded digits data)
#   make test   install and run lint + the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[experiments,test]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/gdsoftmax sweep configs/digits_sweep.toml --out runs

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests bench

test: lint
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) build src/*.egg-info
