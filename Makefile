# One entry point. Every target creates .venv if missing and installs the CPU build of torch
# first, so nothing pulls a CUDA build; override with e.g. `make test TORCH_SPEC=torch==2.14.1`.
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.losskit-installed

.PHONY: test demo lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[cli,test]"
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

test: lint
	KERAS_BACKEND=torch $(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/losskit demo

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_cross_entropy.py --out docs
	$(BIN)/python benchmarks/bench_linear_cross_entropy.py --out docs
	$(BIN)/python benchmarks/bench_elementwise.py --out docs
	$(BIN)/python benchmarks/bench_distributed.py --out docs

clean:
	rm -rf $(VENV) build dist
