"""A hybrid-assistant server in a child process: for the demo, the sweep, tests and the benchmarks.

Client side, beside :mod:`hybrid_assistant.client`: it only starts ``python -m
hybrid_assistant.server`` and polls health over gRPC, so it needs grpcio and protobuf alone
(the server's own dependencies are the child's business). A child process gets its own
interpreter (no GIL shared with the caller) and is stopped the way an orchestrator would stop
it: SIGTERM, then a graceful drain.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from hybrid_assistant.client import AssistantClient


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """``python ARGS...`` (default: ``-m hybrid_assistant.server serve --listen 127.0.0.1:<port> EXTRA...``).

    ``python`` is another interpreter when the server needs another environment (vLLM's).
    The HTTP API is off unless ``http=True``, which serves it on a free port (``http_url``): many
    servers start at once in tests, benches and the demo, and its default port (8000) is one port.
    """

    def __init__(
        self,
        extra: Sequence[str] = (),
        *,
        args: Sequence[str] | None = None,
        port: int | None = None,
        log: Path | None = None,
        env: dict[str, str] | None = None,
        python: str = sys.executable,
        http: bool = False,
    ) -> None:
        self.port = port or free_port()
        self.target = f"127.0.0.1:{self.port}"
        self.http_port = free_port() if http else 0
        self.http_url = f"http://127.0.0.1:{self.http_port}" if http else ""
        self.log = log
        http_listen = f"127.0.0.1:{self.http_port}" if http else "off"
        argv = (
            list(args)
            if args is not None
            else [
                "-m",
                "hybrid_assistant.server",
                "serve",
                "--listen",
                self.target,
                "--http-listen",
                http_listen,
                *extra,
            ]
        )
        self._out = log.open("w") if log else None
        self.proc = subprocess.Popen(
            [python, *argv],
            stdout=self._out or subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
        )

    def wait_ready(self, timeout: float = 600) -> ServerProcess:
        """Until the health service says SERVING; raises with the log's tail if the process exits."""
        deadline = time.monotonic() + timeout
        with AssistantClient(self.target) as client:
            while True:
                if self.proc.poll() is not None:
                    tail = self.log.read_text()[-3000:] if self.log and self.log.exists() else ""
                    raise RuntimeError(f"server exited with status {self.proc.returncode}\n{tail}")
                try:
                    client.wait_ready(timeout=2)
                    return self
                except TimeoutError:
                    if time.monotonic() > deadline:
                        raise

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._out is not None:
            self._out.close()
        return self.proc.returncode

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
