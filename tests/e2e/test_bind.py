"""A busy port is refused (issue 10, defect 9).

gRPC sets SO_REUSEPORT by default, so a second server on a port already in use used to start and
silently take a share of the new connections. The server turns it off: the second start fails with
a clear error and the first keeps every connection.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from hybrid_assistant.client import AssistantClient
from hybrid_assistant.server.app import App, ListenError
from tests.helpers import ServerThread


async def _start_and_fail(settings: Any) -> ListenError:
    """Start an App that must fail to bind; release what it opened; return the error."""
    app = App(settings)
    try:
        with pytest.raises(ListenError) as info:
            await app.start()
    finally:
        await app.stop(grace=0)
    return info.value


def test_second_server_on_a_busy_port_fails_and_the_first_keeps_serving(
    start_server: Callable[..., ServerThread], make_settings: Callable[..., Any], tmp_path: Path
) -> None:
    first = start_server()
    settings = make_settings(listen=first.target, data_dir=tmp_path / "second")
    error = asyncio.run(_start_and_fail(settings))
    assert error.errno == errno.EADDRINUSE
    assert f"cannot listen on '{first.target}'" in str(error) and "already in use" in str(error)
    # Every new connection still reaches the first server.
    for _ in range(5):
        with AssistantClient(first.target) as client:
            reply = client.generate("Tell me a story.", max_tokens=2, timeout=30)
            assert reply.usage.completion_tokens >= 1


def test_a_port_held_by_a_default_grpc_server_is_refused(
    make_settings: Callable[..., Any], tmp_path: Path
) -> None:
    """The holder sets SO_REUSEPORT (gRPC's default, as the server did before): still refused."""
    holder = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    port = holder.add_insecure_port("127.0.0.1:0")
    holder.start()
    try:
        error = asyncio.run(_start_and_fail(make_settings(listen=f"127.0.0.1:{port}")))
        assert error.errno == errno.EADDRINUSE
    finally:
        holder.stop(None)


def test_serve_on_a_busy_port_exits_1_with_one_clear_line(tiny_model_dir: Path, tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        env = {
            **os.environ,
            "HA_MODEL_PATH": str(tiny_model_dir),
            "HA_DATA_DIR": str(tmp_path / "data"),
            "HA_EMBEDDER": "hashing",
            "HA_THREADS": "1",
        }
        result = subprocess.run(
            [sys.executable, "-m", "hybrid_assistant.server", "serve", "--listen", f"127.0.0.1:{port}"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 1, result.stderr
    assert f"error: cannot listen on '127.0.0.1:{port}': the port is already in use" in result.stderr
    assert "Traceback" not in result.stderr
