"""What the local training commands share: their options, their setup, and the base model they train for.

``adapters train``, ``train-demo``, ``available``, ``sweep`` and ``demo`` run on this machine,
not through a server. Configuration and model problems end them with one ``error:`` line and
exit status 2.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

if TYPE_CHECKING:
    from hybrid_assistant.adapters.train_config import BaseModel
    from hybrid_assistant.server.config import Settings

DataDir = Annotated[Path | None, typer.Option(help="Data directory [HA_DATA_DIR].")]
AdapterRoot = Annotated[
    Path | None, typer.Option(help="Write adapters here. Default: the first configured adapter root.")
]
ModelPath = Annotated[Path | None, typer.Option(help="Local HF model dir [HA_MODEL_PATH]. Default: SmolLM2.")]
ModelName = Annotated[str | None, typer.Option(help="Served model name [HA_MODEL_NAME].")]
Progress = Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")]
Threads = Annotated[int | None, typer.Option(help="Torch threads. Default: all cores.")]


def fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def setup_training(threads: int | None) -> None:
    """Log to stderr and set torch threading; call before anything imports torch."""
    from hybrid_assistant.adapters.threads import configure_threads

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    configure_threads(threads)


def local_settings(data_dir: Path | None, model_path: Path | None, model_name: str | None) -> Settings:
    """The server's settings (env, flags) for work on this machine."""
    from pydantic import ValidationError

    from hybrid_assistant.server.config import load_settings

    try:
        return load_settings(None, data_dir=data_dir, model_path=model_path, model_name=model_name)
    except (ValidationError, FileNotFoundError) as exc:
        fail(" ".join(str(exc).split()))


def base_model(settings: Settings) -> BaseModel:
    """The base model those settings name (converted on first use), with its fingerprint."""
    from hybrid_assistant.server.base_model import resolve_base_model
    from hybrid_assistant.server.model_store import ModelNotAvailableError

    try:
        return resolve_base_model(settings)
    except ModelNotAvailableError as exc:
        fail(str(exc))
