# The two commands of the quickstart. Each creates .venv if it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN_DIR ?= runs

.PHONY: demo test clean device-wheels

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
	$(BIN)/bbp run fa-linear --out $(RUN_DIR)/fa-linear --overwrite
	@echo "Figures and metrics of the demo are in $(RUN_DIR)/fa-linear/"

test: $(VENV)/.test-installed
	OPENBLAS_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 -q

# Wheels of the packages the device machine's Python 3.12 lacks, for .ci/device-check (carry .whl).
DEVICE_WHEELS := array-api-compat array-api-strict tomli-w
device-wheels:
	$(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
		--implementation cp --platform manylinux2014_x86_64 -d .whl $(DEVICE_WHEELS)

clean:
	rm -rf $(VENV) $(RUN_DIR) sweeps .pytest_cache .hypothesis
