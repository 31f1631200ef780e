"""Fixtures for the robustness suite: one workspace (tiny model + four adapters) per session,
servers in child processes (hybrid_assistant.testing.live says why not in-process)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hybrid_assistant.testing.live import LiveServer, Workspace


@pytest.fixture(scope="session")
def workspace(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    return Workspace.prepare(tmp_path_factory.mktemp("robustness"), tiny_model_dir)


@pytest.fixture(scope="module")
def live_server(workspace: Workspace, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server with an admin token and the alpha and beta adapters preloaded, shared by a module."""
    server = LiveServer(workspace, tmp_path_factory.mktemp("live") / "data")
    server.start()
    yield server
    server.stop()
