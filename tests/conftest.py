"""Shared fixtures. Nothing here downloads anything; the tiny model is built from a config."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")
# The HTTP API is on by default at 127.0.0.1:8000; servers started by tests (in process and in child
# processes) would collide there. Tests of the HTTP API ask for it on a free port (http_listen=...:0).
os.environ.setdefault("HA_HTTP_LISTEN", "off")

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hybrid_assistant.testing.models import build_adapter, build_tiny_model
from hybrid_assistant.testing.postgres import PostgresServer, PostgresUnavailable
from tests.helpers import ServerThread, preloads, tiny_settings


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One real PostgreSQL cluster for the session; each test takes a database (create_database()).
    Skips only when the server cannot start here (no binaries): CI installs them (make postgres)."""
    try:
        server = PostgresServer.start_new()
    except PostgresUnavailable as exc:
        pytest.skip(f"PostgreSQL unavailable: {exc}")
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture
def pg_dsn(postgres: PostgresServer) -> str:
    """A fresh empty database on the session's cluster."""
    return postgres.create_database()


@pytest.fixture(scope="session")
def adapter_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("adapters")


@pytest.fixture(scope="session")
def tiny_adapters(tiny_model_dir: Path, adapter_root: Path) -> dict[str, Path]:
    """Two adapters that change the tiny model's answers, saved under the adapter root."""
    return {
        "alpha": build_adapter(tiny_model_dir, adapter_root / "alpha", seed=1, targets=("q_proj", "v_proj")),
        "beta": build_adapter(
            tiny_model_dir, adapter_root / "beta", seed=2, rank=8, targets=("q_proj", "o_proj", "down_proj")
        ),
    }


@pytest.fixture
def make_settings(tiny_model_dir: Path, adapter_root: Path, tmp_path: Path) -> Callable[..., Any]:
    def factory(**overrides: Any) -> Any:
        data_dir = overrides.pop("data_dir", tmp_path / "data")
        return tiny_settings(tiny_model_dir, data_dir, adapter_root, **{"shutdown_grace_s": 5, **overrides})

    return factory


@pytest.fixture
def start_server(make_settings: Callable[..., Any]) -> Iterator[Callable[..., ServerThread]]:
    """Start a real gRPC server (tiny model) with the given settings; stopped after the test."""
    servers: list[ServerThread] = []

    def start(wait: bool = True, **overrides: Any) -> ServerThread:
        server = ServerThread(make_settings(**overrides))
        servers.append(server)
        if wait:
            server.wait_ready()
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def shared_server(
    tiny_model_dir: Path,
    adapter_root: Path,
    tiny_adapters: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServerThread]:
    """One server per test module, with both tiny adapters loaded."""
    settings = tiny_settings(
        tiny_model_dir,
        tmp_path_factory.mktemp("shared-data"),
        adapter_root,
        preload_adapters=preloads(tiny_adapters),
    )
    server = ServerThread(settings)
    server.wait_ready()
    yield server
    server.stop()
