# Two commands on a fresh machine:  `make serve`  and  `make test`  (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: serve test test-fast lint weights triton-cpu bench references clean

$(INSTALLED): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[build,test]'
	touch $@

# Skips models whose ONNX is newer than its .tflite and the converter (blazeface_tools/weights/build.py).
weights: $(INSTALLED)
	$(BIN)/python -m blazeface_tools.weights build

serve: weights
	$(BIN)/python -m service

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: weights lint
	bash deploy/test-prereqs.sh
	$(BIN)/pytest

# The inner loop: unit tests only (no servers started), under a minute.
test-fast: weights
	$(BIN)/pytest -m "not slow" -q

triton-cpu: weights
	bash deploy/triton-cpu.sh

references:
	bash tests/reference/rebuild.sh

bench: weights
	$(BIN)/python -m loadtest.bench

clean:
	rm -rf $(VENV) weights loadtest/results
