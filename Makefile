# Every target installs what it needs into .venv; a fresh machine needs only `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
IMAGE ?= localhost/rtbserve:dev
ARCHES ?= amd64 arm64
PLATFORMS ?= linux/arm64,linux/amd64
# docker buildx (for hosts with Docker): a multi-platform build must go to a registry.
PUSH ?=

.PHONY: help venv demo test test-unit test-e2e lint format typecheck native-lint native-sanitize fuzz bench image image-test image-push image-buildx clean

help:
	@echo "make demo      train, upload to a local S3, serve and load-test, all on this machine"
	@echo "make test      lint, type-check and run the whole test suite (builds the local cluster tools once)"
	@echo "make native-sanitize   the C extensions under ASan+UBSan: native tests, then each fuzz target"
	@echo "make fuzz FUZZ_SECONDS=3600   each fuzz target for that long, sanitized"
	@echo "make bench     benchmarks: rtbserve beside its peers (writes bench/results/)"
	@echo "make cluster-up / cluster-down   a local kwok Kubernetes cluster"
	@echo "make image     the image for amd64 and arm64 with buildah, no Docker daemon or registry needed"
	@echo "make image-test   run it as a pod would, per architecture (arm64 under qemu), then as a real pod of the local cluster"
	@echo "make image-push REGISTRY=host:port/path   push the manifest list"

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

# Debian bookworm bases made with mmdebstrap (cached in ~/.cache/rtbserve/images), then the
# Dockerfile with buildah per architecture, gathered in the manifest list $(IMAGE).
# PYTHON_IMAGE=python:3.11-slim builds on Docker Hub's image instead.
image:
	IMAGE=$(IMAGE) ARCHES="$(ARCHES)" hack/image.sh build

image-test: $(STAMP) cluster-tools
	IMAGE=$(IMAGE) ARCHES="$(ARCHES)" $(BIN)/python -m pytest -m image tests/image -s

image-push:
	IMAGE=$(IMAGE) hack/image.sh push $(REGISTRY)

image-buildx:
	docker buildx build --platform $(PLATFORMS) -t $(IMAGE) $(if $(PUSH),--push,) .

clean:
	rm -rf $(VENV) build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache

-include hack/cluster.mk
