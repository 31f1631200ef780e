"""``hybrid-assistant serve``: run the server until SIGTERM.

Every setting has a flag or an HA_* variable here, TLS included, so a deployment never needs a
TOML file just to turn TLS on. Configuration mistakes exit 2 before anything heavy is imported;
a port already in use exits 1 with one line that says so.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from hybrid_assistant.server.config import AdapterPreload, load_settings


def _preloads(values: list[str] | None) -> list[AdapterPreload] | None:
    if not values:
        return None
    out = []
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise typer.BadParameter(f"--preload expects NAME=PATH, got {value!r}")
        out.append(AdapterPreload(name=name, path=path))
    return out


def serve(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", envvar="HA_CONFIG", help="TOML config file.")
    ] = None,
    listen: Annotated[str | None, typer.Option(help="host:port [HA_LISTEN].")] = None,
    http_listen: Annotated[
        str | None,
        typer.Option(
            help="host:port of the OpenAI-compatible HTTP API; off disables it; port 0 = any free "
            "port, logged [HA_HTTP_LISTEN]."
        ),
    ] = None,
    engine: Annotated[str | None, typer.Option(help="transformers | vllm [HA_ENGINE].")] = None,
    model_path: Annotated[Path | None, typer.Option(help="Local HF model dir [HA_MODEL_PATH].")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Data directory [HA_DATA_DIR].")] = None,
    adapter_root: Annotated[
        list[Path] | None, typer.Option(help="Adapter root, repeatable [HA_ADAPTER_ROOTS as JSON].")
    ] = None,
    preload: Annotated[
        list[str] | None, typer.Option(help="NAME=PATH adapter to preload, repeatable.")
    ] = None,
    dtype: Annotated[str | None, typer.Option(help="float32 | bfloat16 [HA_DTYPE].")] = None,
    threads: Annotated[int | None, typer.Option(help="Torch threads [HA_THREADS].")] = None,
    max_batch_size: Annotated[int | None, typer.Option(help="[HA_MAX_BATCH_SIZE]")] = None,
    max_resident_adapters: Annotated[int | None, typer.Option(help="[HA_MAX_RESIDENT_ADAPTERS]")] = None,
    max_lora_rank: Annotated[int | None, typer.Option(help="[HA_MAX_LORA_RANK]")] = None,
    admin_token: Annotated[str | None, typer.Option(help="Admin bearer token [HA_ADMIN_TOKEN].")] = None,
    tls_cert: Annotated[
        Path | None,
        typer.Option(help="PEM certificate chain; with --tls-key, serve TLS [HA_TLS_CERT]."),
    ] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM private key of --tls-cert [HA_TLS_KEY].")] = None,
    tls_client_ca: Annotated[
        Path | None,
        typer.Option(
            help="PEM CA for mutual TLS: clients must present a certificate it signed [HA_TLS_CLIENT_CA]."
        ),
    ] = None,
    metrics_port: Annotated[int | None, typer.Option(help="Prometheus port [HA_METRICS_PORT].")] = None,
    log_level: Annotated[str | None, typer.Option(help="[HA_LOG_LEVEL]")] = None,
) -> None:
    """Start the gRPC server (health, reflection, metrics) and the OpenAI-compatible HTTP API beside
    it. Works with no flags on a fresh machine."""
    try:
        settings = load_settings(
            config,
            listen=listen,
            http_listen=http_listen,
            engine=engine,
            model_path=model_path,
            data_dir=data_dir,
            adapter_roots=adapter_root or None,
            preload_adapters=_preloads(preload),
            dtype=dtype,
            threads=threads,
            max_batch_size=max_batch_size,
            max_resident_adapters=max_resident_adapters,
            max_lora_rank=max_lora_rank,
            admin_token=admin_token,
            tls_cert=tls_cert,
            tls_key=tls_key,
            tls_client_ca=tls_client_ca,
            metrics_port=metrics_port,
            log_level=log_level,
        )
    except (ValidationError, FileNotFoundError) as exc:
        typer.echo(f"configuration error: {exc}", err=True)
        raise typer.Exit(2) from None
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for root in settings.resolved_adapter_roots:
        root.mkdir(parents=True, exist_ok=True)

    from hybrid_assistant.pg_schema import SchemaTooNew
    from hybrid_assistant.server.app import App, ListenError  # heavy imports only once the config is valid
    from hybrid_assistant.server.database import DatabaseUnavailable

    try:
        code = asyncio.run(App(settings).serve_forever())
    except ListenError as exc:  # the listening port is taken or not available
        typer.echo(f"error: {exc.strerror}", err=True)
        raise typer.Exit(1) from None
    except (SchemaTooNew, DatabaseUnavailable) as exc:  # database_url: refused or unreachable
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    raise typer.Exit(code)
