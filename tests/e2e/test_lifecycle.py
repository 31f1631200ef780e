"""The server as a process: `hybrid-assistant serve`, SIGTERM drain, engine death, and the CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from hybrid_assistant.client import AssistantClient
from hybrid_assistant.process import free_port
from tests.helpers import ServerThread

Q = "Tell me a story about a dog."


@pytest.fixture
def served(
    tiny_model_dir: Path, adapter_root: Path, tiny_adapters: dict[str, Path], tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    port = free_port()
    env = {
        **os.environ,
        "HA_MODEL_PATH": str(tiny_model_dir),
        "HA_DATA_DIR": str(tmp_path / "data"),
        "HA_ADAPTER_ROOTS": f'["{adapter_root}"]',
        "HA_ADMIN_TOKEN": "tok",
        "HA_THREADS": "1",
        "HA_EMBEDDER": "hashing",
        "HA_MAX_TOTAL_TOKENS": "1024",
        "HA_MAX_PROMPT_TOKENS": "768",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hybrid_assistant.server",
            "serve",
            "--listen",
            f"127.0.0.1:{port}",
            "--preload",
            "alpha=alpha",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    target = f"127.0.0.1:{port}"
    try:
        with AssistantClient(target) as client:
            deadline = time.monotonic() + 120
            while True:
                if proc.poll() is not None:
                    pytest.fail(
                        f"server exited with {proc.returncode}: {proc.stdout.read() if proc.stdout else ''}"
                    )
                try:
                    client.wait_ready(timeout=1)
                    break
                except TimeoutError:
                    if time.monotonic() > deadline:
                        raise
        yield proc, target
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hybrid_assistant.server", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_sigterm_drains_in_flight_requests(served: tuple[subprocess.Popen[str], str]) -> None:
    proc, target = served
    with AssistantClient(target) as client:
        stream = client.stream(Q, adapter="alpha", temperature=0, max_tokens=300)
        first = next(stream)
        proc.send_signal(signal.SIGTERM)
        rest = list(stream)  # the in-flight request still completes
    assert rest[-1].summary.usage.completion_tokens > 1
    assert rest[-1].summary.text.startswith(first.delta)
    assert proc.wait(60) == 0
    assert "stopped" in (proc.stdout.read() if proc.stdout else "")


def test_cli_against_a_running_server(served: tuple[subprocess.Popen[str], str], tmp_path: Path) -> None:
    _, target = served
    env = {"HA_TARGET": target}
    out = cli(
        "generate", "What is the capital of France?", "--max-tokens", "5", "--temperature", "0", env=env
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip()
    streamed = cli(
        "generate",
        "What is the capital of France?",
        "--max-tokens",
        "5",
        "--temperature",
        "0",
        "--stream",
        env=env,
    )
    assert streamed.stdout.strip() == out.stdout.strip()
    listed = cli("adapters", "list", env=env)
    assert "alpha" in listed.stdout and "pinned" in listed.stdout
    denied = cli("adapters", "load", "beta", "beta", env=env)
    assert denied.returncode == 1 and "UNAUTHENTICATED" in denied.stderr
    loaded = cli("adapters", "load", "beta", "beta", "--token", "tok", env=env)
    assert loaded.returncode == 0 and "loaded beta" in loaded.stdout
    with_adapter = cli("generate", "What is the capital of France?", "-a", "beta", "--json", env=env)
    assert '"adapter": "beta"' in with_adapter.stdout
    missing = cli("generate", "hi", "-a", "nope", env=env)
    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr
    assert cli("adapters", "unload", "beta", "--token", "tok", env=env).returncode == 0
    assert '"engine": "transformers"' in cli("info", env=env).stdout


def test_cli_reports_an_unreachable_server() -> None:
    out = cli("generate", "hi", "--target", f"127.0.0.1:{free_port()}")
    assert out.returncode == 1
    assert "UNAVAILABLE" in out.stderr


def test_a_failing_step_fails_its_requests_and_serving_goes_on(
    start_server: Callable[..., ServerThread],
) -> None:
    server = start_server()
    runner = server.app.engine._runner  # fault injection: the next prefill and decode passes fail
    real_prefill, real_forward = runner.prefill, runner.forward  # type: ignore[union-attr]

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("simulated step fault")

    runner.prefill = runner.forward = broken  # type: ignore[union-attr, method-assign]
    with AssistantClient(server.target) as client:
        with pytest.raises(grpc.RpcError) as info:
            client.generate(Q, max_tokens=4)
        assert info.value.code() == grpc.StatusCode.INTERNAL
        assert "simulated" not in info.value.details()  # internals are not leaked
        assert server.app.engine.healthy()
        runner.prefill, runner.forward = real_prefill, real_forward  # type: ignore[union-attr, method-assign]
        assert client.generate(Q, max_tokens=4).text


def test_engine_death_stops_serving(start_server: Callable[..., ServerThread]) -> None:
    server = start_server()
    scheduler = server.app.engine._scheduler  # fault injection: the scheduler's own bookkeeping fails

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("simulated bookkeeping fault")

    scheduler._to_decoding = broken  # type: ignore[union-attr, method-assign]
    with AssistantClient(server.target) as client:
        with pytest.raises(grpc.RpcError) as info:
            client.generate(Q, max_tokens=4)
        assert info.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL)
        assert "simulated" not in info.value.details()  # internals are not leaked
    assert server.call(server.app.wait_stopped(), 30) == 1
    assert not server.app.engine.healthy()


def test_health_is_not_serving_while_draining(start_server: Callable[..., ServerThread]) -> None:
    server = start_server(shutdown_grace_s=10)
    statuses: list[int] = []
    with AssistantClient(server.target) as client:
        stream = client.stream(Q, temperature=0, max_tokens=200)
        next(stream)
        stopper = threading.Thread(target=lambda: server.call(server.app.stop()))
        stopper.start()
        time.sleep(0.3)
        statuses.append(server.call(server.app.health.Check(health_pb2.HealthCheckRequest(), None)).status)
        list(stream)
        stopper.join(30)
    assert statuses == [health_pb2.HealthCheckResponse.NOT_SERVING]
