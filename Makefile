# The two README commands: `make demo` and `make test`. Each creates .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo lint format install clean gpu-check gpu-check-bundle

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	TRITON_INTERPRET=1 $(BIN)/python -m pytest

demo: $(STAMP)
	$(BIN)/adapt demo --out demo-out --force  # the demo's own folder: rerunning replaces it

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The GPU validation run (tools/gpu_check.py; docs/kernels.md). It runs on the GPU machine with
# that machine's python3 (torch + Triton there), not the venv; results go to $(OUT) or
# gpu-check-out. gpu-check-bundle, run where the package index is reachable, puts the wheels
# the GPU machine lacks (spandrel and its small pure-Python dependencies) into .whl/.
GPU_PYTHON ?= python3
BUNDLE := spandrel==0.4.2 einops safetensors typing_extensions

gpu-check:
	$(GPU_PYTHON) tools/gpu_check.py --out "$${OUT:-gpu-check-out}"

gpu-check-bundle: $(STAMP)
	$(BIN)/python -m pip download --quiet --no-deps --only-binary :all: --dest .whl $(BUNDLE)
	ls .whl

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .hypothesis
