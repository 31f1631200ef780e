"""The base model for work on this machine (training adapters, checking them), found as the server finds it.

``--model-path`` if configured, else SmolLM2 converted once into the data directory
(:func:`hybrid_assistant.server.model_store.resolve_model`), with the weights' sha256 that
adapter metadata and the demo's cache keys record. ``adapters/`` never imports the server, so
the commands and workflows that train resolve the model here and hand
:mod:`hybrid_assistant.adapters` a plain :class:`~hybrid_assistant.adapters.train_config.BaseModel`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hybrid_assistant.adapters.train_config import BaseModel
from hybrid_assistant.server.model_store import model_fingerprint, resolve_model

if TYPE_CHECKING:
    from hybrid_assistant.server.config import Settings


def resolve_base_model(settings: Settings) -> BaseModel:
    """The configured model (converting the default one on first use); raises ModelNotAvailableError."""
    resolved = resolve_model(settings.model_path, settings.model_name, settings.models_dir)
    return BaseModel(resolved.path, resolved.name, resolved.aliases, model_fingerprint(resolved.path))
