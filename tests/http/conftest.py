"""A live server with the OpenAI-compatible API on a free port, driven over real sockets."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from openai import AsyncOpenAI, OpenAI

from hybrid_assistant.client import AssistantClient
from tests.helpers import ServerThread, preloads, tiny_settings

TOKEN = "http-admin-token"
DOCS = [
    {"id": "paris", "text": "Paris is the capital of France. The Eiffel Tower stands in Paris."},
    {"id": "rome", "text": "Rome is the capital of Italy. The Colosseum stands in Rome."},
    {"id": "tokyo", "text": "Tokyo is the capital of Japan. Mount Fuji is seen from Tokyo."},
]
EXPERIMENT = {
    "name": "style-ab",
    "arms": [{"name": "base", "control": True}, {"name": "alpha", "adapter": "alpha"}],
}


@pytest.fixture(scope="module")
def http_server(
    tiny_model_dir: Path,
    adapter_root: Path,
    tiny_adapters: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServerThread]:
    """One server per module: both tiny adapters, an admin token, a small knowledge base and an
    A/B experiment (base vs alpha); gRPC and HTTP on free ports."""
    settings = tiny_settings(
        tiny_model_dir,
        tmp_path_factory.mktemp("http-data"),
        adapter_root,
        http_listen="127.0.0.1:0",
        preload_adapters=preloads(tiny_adapters),
        admin_token=TOKEN,
        experiments=[EXPERIMENT],
    )
    server = ServerThread(settings)
    server.wait_ready()
    with AssistantClient(server.target, token=TOKEN, timeout=60) as admin:
        admin.ingest(DOCS)
    yield server
    server.stop()


@pytest.fixture
def openai_client(http_server: ServerThread) -> Iterator[OpenAI]:
    # No retries: a 429 or 503 must reach the test, not be retried away. Any api_key: only the
    # admin endpoints check a token.
    with OpenAI(base_url=f"{http_server.http_url}/v1", api_key="unused", max_retries=0, timeout=60) as client:
        yield client


@pytest.fixture
def async_openai(http_server: ServerThread) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=f"{http_server.http_url}/v1", api_key="unused", max_retries=0, timeout=60)


@pytest.fixture
def base_model(http_server: ServerThread) -> str:
    return str(http_server.app.engine.model_info.name)


@pytest.fixture
def start_http_server(start_server: Callable[..., ServerThread]) -> Callable[..., ServerThread]:
    """``start_server`` with the HTTP API on a free port."""

    def start(wait: bool = True, **overrides: Any) -> ServerThread:
        return start_server(wait=wait, http_listen="127.0.0.1:0", **overrides)

    return start
