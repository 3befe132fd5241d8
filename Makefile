# Developer and user entry points. `make test` and `make demo` build .venv on
# first use (Python 3.11, torch 2.13.0 CPU build, fairseq-fixed, pinned by
# constraints.txt) and reinstall the package whenever its sources change.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
SOURCES := $(shell find fairseq_ser -name '*.py') setup.py README.md

.PHONY: install test test-fast test-e2e demo bench clean

# Third-party environment: rebuilt only when the pins change.
$(VENV)/.deps: constraints.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip setuptools wheel
	# torch first and exactly pinned: anything looser lets pip fetch a multi-GB CUDA build
	$(PIP) install torch==2.13.0
	$(PIP) install -c constraints.txt fairseq-fixed==0.12.3.1 soundfile soxr faiss-cpu safetensors tensorboardX tqdm matplotlib pytest transformers onnx onnxruntime onnxscript
	touch $@

# The package itself, installed as a regular (non-editable) package so that
# fairseq finds it as a user dir from any working directory (see README).
$(VENV)/.pkg: $(VENV)/.deps $(SOURCES)
	$(PIP) install --quiet --no-deps --no-build-isolation --force-reinstall .
	touch $@

install: $(VENV)/.pkg

# The tests come in two layers (markers: pytest.ini). `make test` runs both, as CI
# does. `make test-fast` runs the in-process layer only (no subprocess of
# fairseq-hydra-train or fairseq-ser; under 2 minutes on 2 cores): it imports the
# working tree from the repository root, so it needs no reinstall. `make
# test-e2e` runs the other: the console commands as subprocesses, one chain per method.
test: install
	$(PY) -m pytest tests -q

test-fast: $(VENV)/.deps
	$(PY) -m pytest tests -q -m "not e2e"

test-e2e: install
	$(PY) -m pytest tests -q -m e2e

demo: install
	$(VENV)/bin/fairseq-ser demo

# Speed and memory benchmarks (tests/benchmarks/), each printing a table and a
# summary line of ratios; not part of `make test`.
#   make bench BENCH_ARGS="--only kmeans"   one of them;  BENCH_ARGS="-- --quick"   small sizes
BENCH_ARGS ?=
bench: install
	$(PY) tests/benchmarks/run_all.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info demo_out
