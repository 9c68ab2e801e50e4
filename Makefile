# One entry point. Every target creates .venv if missing and installs torch first, then only the extras it needs:
# `make demo` torch + .[cli]; `make test` adds .[test]. Override the torch pin with e.g.
# `make test TORCH_SPEC=torch==2.14.1`. TORCH_INDEX is where torch comes from: empty means pip's configured index
# (this project's machines carry a local CPU wheel); on a machine without one use PyTorch's CPU-only index,
# `make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu`, instead of the multi-GB CUDA build that a bare
# `pip install torch` pulls on Linux.
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
VENV := .venv
BIN := $(VENV)/bin
TORCH_STAMP := $(VENV)/.losskit-torch
DEMO_STAMP := $(VENV)/.losskit-cli
STAMP := $(VENV)/.losskit-test
PIP := $(BIN)/python -m pip install --quiet

.PHONY: test demo lint bench clean

$(TORCH_STAMP):
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"
	touch $@

$(DEMO_STAMP): $(TORCH_STAMP) pyproject.toml
	$(PIP) -e ".[cli]"
	touch $@

$(STAMP): $(DEMO_STAMP)
	$(PIP) -e ".[cli,test]"
	touch $@

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

test: lint
	KERAS_BACKEND=torch $(BIN)/python -m pytest -q

demo: $(DEMO_STAMP)
	$(BIN)/losskit demo

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_cross_entropy.py --out docs
	$(BIN)/python benchmarks/bench_linear_cross_entropy.py --out docs
	$(BIN)/python benchmarks/bench_elementwise.py --out docs
	$(BIN)/python benchmarks/bench_distributed.py --out docs
	$(BIN)/python benchmarks/bench_transformers.py --out docs
	$(BIN)/python benchmarks/bench_sweep.py --out docs
	$(BIN)/python benchmarks/bench_training_step.py

clean:
	rm -rf $(VENV) build dist

# The CPU kernels and the C++ entry points built with AddressSanitizer + UBSan (alignment checks on, any finding
# fatal: LOSSKIT_SANITIZE=1 builds that variant under its own cache key), run under the kernels' layout/option grid
# on both eager paths. libasan must be the first library in the process, so it is preloaded into Python, with
# libstdc++ (else ASan cannot intercept the C++ exceptions torch throws); Python's own allocations are not
# leak-checked.
SANITIZE_TESTS ?= tests/test_native.py tests/test_native_pointwise.py tests/test_native_targets.py tests/test_native_embedding.py tests/test_ctc_loss.py tests/test_entry.py
.PHONY: sanitize
sanitize: $(STAMP)
	LD_PRELOAD="$$($(CXX) -print-file-name=libasan.so) $$($(CXX) -print-file-name=libstdc++.so)" ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
		UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 LOSSKIT_SANITIZE=1 KERAS_BACKEND=torch \
		$(BIN)/python -m pytest -q -p no:cacheprovider $(SANITIZE_TESTS)
