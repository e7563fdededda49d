# Every target installs what it needs into .venv; a fresh machine needs only `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
IMAGE ?= rtbserve:dev
PLATFORMS ?= linux/arm64,linux/amd64
# A multi-platform build must go to a registry: `make image IMAGE=<registry>/rtbserve:tag PUSH=1`.
PUSH ?=

.PHONY: help venv demo test test-unit test-e2e lint format typecheck native-lint native-sanitize fuzz bench image clean

help:
	@echo "make demo      train, upload to a local S3, serve and load-test, all on this machine"
	@echo "make test      lint, type-check and run the whole test suite (builds the local cluster tools once)"
	@echo "make native-sanitize   the C extensions under ASan+UBSan: native tests, then each fuzz target"
	@echo "make fuzz FUZZ_SECONDS=3600   each fuzz target for that long, sanitized"
	@echo "make bench     benchmarks: rtbserve beside its peers (writes bench/results/)"
	@echo "make cluster-up / cluster-down   a local kwok Kubernetes cluster"
	@echo "make image     multi-arch container image with docker buildx"

$(STAMP): pyproject.toml $(wildcard setup.py)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/rtbserve demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck native-lint cluster-tools
	$(BIN)/python -m pytest
	hack/native-sanitize.sh all

# Warnings as errors on gcc and clang, clang-format, cppcheck.
native-lint: $(STAMP)
	PYTHON=$(BIN)/python hack/native-lint.sh

FUZZ_SECONDS ?= 60
native-sanitize: $(STAMP)
	FUZZ_SECONDS=$(FUZZ_SECONDS) PYTHON=$(BIN)/python hack/native-sanitize.sh all

fuzz: $(STAMP)
	FUZZ_SECONDS=$(FUZZ_SECONDS) PYTHON=$(BIN)/python hack/native-sanitize.sh fuzz

test-unit: $(STAMP)
	$(BIN)/python -m pytest -m "not e2e"

test-e2e: $(STAMP) cluster-tools
	$(BIN)/python -m pytest -m e2e

bench: $(STAMP)
	$(BIN)/python -m bench.run

image:
	docker buildx build --platform $(PLATFORMS) -t $(IMAGE) $(if $(PUSH),--push,) .

clean:
	rm -rf $(VENV) build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache

-include hack/cluster.mk
