# The two README commands: `make demo` and `make test`. Each creates .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# tensorrt-stubs pins the tensorrt wheel itself (NVIDIA's index, a GPU driver): the stubs are
# installed alone, copied where mypy reads them, and type-check every module touching TensorRT.
TRT_STUBS := tensorrt-stubs==10.13.0.35.1
TYPINGS := $(VENV)/typings

.PHONY: test demo lint format install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps '$(TRT_STUBS)'
	$(BIN)/python .ci/trt_stubs.py $(TYPINGS)
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	TRITON_INTERPRET=1 $(BIN)/python -m pytest

demo: $(STAMP)
	$(BIN)/adapt demo --out demo-out --force  # the demo's own folder: rerunning replaces it

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .hypothesis
