# The two README commands: `make demo` and `make test`. Each creates .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# tensorrt-stubs pins the tensorrt wheel itself (NVIDIA's index, a GPU driver): the stubs are
# installed alone, copied where mypy reads them, and type-check every module touching TensorRT.
TRT_STUBS := tensorrt-stubs==10.13.0.35.1
TYPINGS := $(VENV)/typings

.PHONY: test demo lint format install clean native gpu-check gpu-check-bundle

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

# The native runner (docs/native.md): configure, build, ctest. With .venv, its results are
# compared with the Python implementation's; without TensorRT, adaptsr-trt itself is skipped.
native:
	@command -v cmake >/dev/null && command -v c++ >/dev/null || { echo "error: make native needs \
	cmake, a C++17 compiler, libpng, nlohmann-json and CLI11 (apt-get install cmake g++ libpng-dev \
	nlohmann-json3-dev libcli11-dev)" >&2; exit 1; }
	cmake -S . -B build/native $(if $(wildcard $(BIN)/python),-DADAPTSR_PYTHON=$(abspath $(BIN)/python) -DADAPTSR_REQUIRE_PYTHON=ON)
	cmake --build build/native --parallel
	cd build/native && ctest --output-on-failure

# The GPU validation run (benchmarks/gpu_check/; docs/kernels.md). It runs on the GPU machine with
# that machine's python3 (torch + Triton there), not the venv; results go to $(OUT) or
# gpu-check-out. gpu-check-bundle, run where the package index is reachable, puts the wheels
# the GPU machine lacks (spandrel and its small pure-Python dependencies) into .whl/.
GPU_PYTHON ?= python3
BUNDLE := spandrel==0.4.2 einops safetensors typing_extensions

gpu-check:
	$(GPU_PYTHON) -m benchmarks.gpu_check --out "$${OUT:-gpu-check-out}"

gpu-check-bundle: $(STAMP)
	$(BIN)/python -m pip download --quiet --no-deps --only-binary :all: --dest .whl $(BUNDLE)
	ls .whl

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .hypothesis
