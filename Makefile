# The two commands of the quickstart. Each creates .venv if it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN_DIR ?= runs

.PHONY: demo test clean

$(BIN)/bbp: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.test-installed: $(BIN)/bbp
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: $(BIN)/bbp
	$(BIN)/bbp verify --quick
	$(BIN)/bbp run fa-linear --out $(RUN_DIR)/fa-linear
	@echo "Figures and metrics of the demo are in $(RUN_DIR)/fa-linear/"

test: $(VENV)/.test-installed
	OPENBLAS_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 -q

clean:
	rm -rf $(VENV) $(RUN_DIR) .pytest_cache .hypothesis
