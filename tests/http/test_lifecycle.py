"""The HTTP API's lifecycle with the gRPC server: a client that leaves frees its engine slot, a
drain lets open streams finish, a busy port is a clear error, TLS uses the gRPC server's files,
and SIGTERM stops both transports."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from hybrid_assistant.process import free_port
from hybrid_assistant.server.app import App, ListenError
from hybrid_assistant.server.config import load_settings
from tests.e2e.test_tls import Pki, pki  # noqa: F401 - the fixture
from tests.helpers import ServerThread

Q = "Tell me a long story about the sea."


def _body(server: ServerThread, **kw: Any) -> dict[str, Any]:
    model = server.app.engine.model_info.name
    return {"model": model, "messages": [{"role": "user", "content": Q}], "temperature": 0, **kw}


def _wait_idle(server: ServerThread, timeout: float = 30) -> float:
    """Seconds until the engine holds no request (fails with what it still holds)."""
    engine = server.app.engine
    started = time.monotonic()
    while engine.active_requests() and time.monotonic() - started < timeout:
        time.sleep(0.01)
    assert engine.active_requests() == 0, engine.scheduler_stats()
    return time.monotonic() - started


def _cancelled() -> float:
    """Generations the core saw cancelled (this process hosts the server: one registry)."""
    labels = {"method": "generate", "adapter": "", "status": "CancelledError"}
    return REGISTRY.get_sample_value("hybrid_assistant_requests_total", labels) or 0.0


def test_a_closed_stream_frees_its_slot(http_server: ServerThread) -> None:
    # 400 tokens take the tiny model ~0.15 s alone: the close lands mid-generation.
    body = _body(http_server, max_tokens=400, stream=True)
    before = _cancelled()
    with httpx.Client(timeout=60) as client:
        with client.stream("POST", f"{http_server.http_url}/v1/chat/completions", json=body) as response:
            lines = response.iter_lines()
            assert next(lines).startswith("data: ")  # the role chunk
        # Leaving the block closes the connection mid-stream.
        _wait_idle(http_server)
        assert _cancelled() == before + 1
        after = client.post(
            f"{http_server.http_url}/v1/chat/completions", json=_body(http_server, max_tokens=2)
        )
    assert after.status_code == 200 and after.json()["usage"]["completion_tokens"] >= 1


def test_a_unary_client_that_leaves_frees_its_slot(http_server: ServerThread) -> None:
    before = _cancelled()
    with pytest.raises(httpx.TimeoutException):  # the client gives up and closes the connection
        httpx.post(
            f"{http_server.http_url}/v1/chat/completions",
            json=_body(http_server, max_tokens=400),
            timeout=0.02,
        )
    _wait_idle(http_server)
    assert _cancelled() == before + 1


def test_drain_lets_an_open_stream_finish(start_http_server: Callable[..., ServerThread]) -> None:
    server = start_http_server()
    body = _body(server, max_tokens=40, stream=True)
    events: list[str] = []
    opened = threading.Event()

    def read() -> None:
        with httpx.stream("POST", f"{server.http_url}/v1/chat/completions", json=body, timeout=60) as r:
            for line in r.iter_lines():
                if line:
                    events.append(line)
                    opened.set()

    reader = threading.Thread(target=read)
    reader.start()
    assert opened.wait(30)
    server.call(server.app.stop(grace=30), 60)
    reader.join(30)
    assert events[-1] == "data: [DONE]"
    finish = json.loads(events[-2].removeprefix("data: "))
    assert finish["choices"][0]["finish_reason"] in ("stop", "length")
    with pytest.raises(httpx.TransportError):  # stopped: nothing listens any more
        httpx.get(f"{server.http_url}/health", timeout=5)


def test_a_busy_http_port_is_a_listen_error(make_settings: Callable[..., Any]) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        app = App(make_settings(http_listen=f"127.0.0.1:{port}"))

        async def start() -> None:
            try:
                await app.start()
            finally:
                await app.stop(grace=0)

        with pytest.raises(ListenError) as info:
            asyncio.run(start())
    assert f"cannot listen on '127.0.0.1:{port}' (HTTP API)" in str(info.value)
    assert "already in use" in str(info.value)


def test_http_listen_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HA_HTTP_LISTEN", raising=False)
    assert load_settings().http_listen == "127.0.0.1:8000"  # on by default
    assert load_settings(http_listen="off").http_listen == ""
    assert load_settings(http_listen="").http_listen == ""
    monkeypatch.setenv("HA_HTTP_LISTEN", "0.0.0.0:9000")
    assert load_settings().http_listen == "0.0.0.0:9000"
    with pytest.raises(ValueError, match="http_listen must be host:port"):
        load_settings(http_listen="8000")


def test_https_and_mutual_tls_use_the_grpc_servers_files(
    start_http_server: Callable[..., ServerThread],
    pki: Pki,  # noqa: F811
) -> None:
    server = start_http_server(
        tls_cert=pki.server_chain, tls_key=pki.server_key, tls_client_ca=pki.ca, listen="localhost:0"
    )
    url = f"https://localhost:{server.app.http_port}/health"
    with_cert = ssl.create_default_context(cafile=str(pki.ca))
    with_cert.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    with httpx.Client(verify=with_cert) as client:
        assert client.get(url, timeout=10).json() == {"status": "serving"}
    with pytest.raises(httpx.TransportError):  # no client certificate: the handshake fails
        httpx.get(url, verify=ssl.create_default_context(cafile=str(pki.ca)), timeout=10)
    with pytest.raises(httpx.TransportError):  # plain HTTP to a TLS port
        httpx.get(f"http://localhost:{server.app.http_port}/health", timeout=10)


def test_serve_with_http_drains_both_on_sigterm(tiny_model_dir: Path, tmp_path: Path) -> None:
    """`serve --http-listen`: the log names the bound port; SIGTERM ends the process with 0."""
    port, http_port = free_port(), free_port()
    env = {
        **os.environ,
        "HA_MODEL_PATH": str(tiny_model_dir),
        "HA_DATA_DIR": str(tmp_path / "data"),
        "HA_EMBEDDER": "hashing",
        "HA_THREADS": "1",
        "HA_MAX_TOTAL_TOKENS": "512",
        "HA_MAX_PROMPT_TOKENS": "384",
    }
    command = [sys.executable, "-m", "hybrid_assistant.server", "serve", "--listen", f"127.0.0.1:{port}"]
    proc = subprocess.Popen(
        [*command, "--http-listen", f"127.0.0.1:{http_port}"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                if httpx.get(f"http://127.0.0.1:{http_port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    assert f"HTTP API (OpenAI-compatible) on http://127.0.0.1:{http_port}/v1" in output
    assert "stopped" in output
