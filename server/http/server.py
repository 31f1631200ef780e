"""The HTTP API's lifecycle inside the gRPC server's process and event loop (``server/app.py``).

Uvicorn serves the FastAPI app on the running loop, so both transports share one core, engine
and registry without threads or copies. Three things differ from ``uvicorn.run``:

* **Signals stay with the App.** ``uvicorn.Server.serve`` installs its own SIGINT/SIGTERM
  handlers (``capture_signals``) and re-raises the signal after its shutdown, which would take
  the process's drain away from ``App.serve_forever``. :class:`_Server` makes that hook a no-op;
  the App stops this server (:meth:`HttpServer.stop`) when it drains gRPC.
* **The socket is bound here, first** (:meth:`HttpServer.bind`): a busy port is a
  :class:`ListenError` with its reason before anything starts (uvicorn would log and
  ``sys.exit``), and port 0 reports the port it got.
* **No logging setup, no access log**: the process's logging is ``serve``'s; a line per request
  would cost the hot path and say what the request log already says.

TLS, and mutual TLS, use the gRPC server's files (``tls_cert``, ``tls_key``, ``tls_client_ca``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import math
import socket
import ssl
from collections.abc import Iterator
from typing import TYPE_CHECKING

import uvicorn
from fastapi import FastAPI

from hybrid_assistant.server.http import errors
from hybrid_assistant.server.http.routes import OpenAIRoutes, Shared

if TYPE_CHECKING:
    from hybrid_assistant.server.config import Settings

log = logging.getLogger(__name__)


class ListenError(OSError):
    """The HTTP API could not bind its address (``strerror`` says why, in one line)."""


def create_app(shared: Shared) -> FastAPI:
    """The FastAPI app: OpenAI routes, OpenAI-shaped errors, bodies bounded like gRPC messages."""
    app = FastAPI(
        title="hybrid-assistant",
        summary="OpenAI-compatible API beside the gRPC contract",
    )
    app.include_router(OpenAIRoutes(shared).router())
    errors.install(app, shared.settings.max_message_bytes)
    return app


class _Server(uvicorn.Server):
    """uvicorn.Server that leaves the process's signal handlers alone (the App owns the drain)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpServer:
    def __init__(self, settings: Settings, app: FastAPI) -> None:
        self._settings = settings
        self._listen = settings.http_listen
        tls = settings.tls_cert is not None and settings.tls_key is not None
        self._config = uvicorn.Config(
            app,
            log_config=None,
            access_log=False,
            lifespan="off",
            ws="none",
            timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_s),
            ssl_certfile=settings.tls_cert if tls else None,
            ssl_keyfile=settings.tls_key if tls else None,
            ssl_ca_certs=settings.tls_client_ca if tls else None,
            ssl_cert_reqs=ssl.CERT_REQUIRED if tls and settings.tls_client_ca else ssl.CERT_NONE,
        )
        self._server = _Server(self._config)
        self._socket: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None
        self.port = 0
        self.scheme = "https" if tls else "http"

    def bind(self) -> int:
        """Bind the listen address now (ListenError if it cannot be); returns the port."""
        host, _, port = self._listen.rpartition(":")
        host = host.strip("[]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT only, not a live port
            sock.bind((host, int(port)))
            sock.listen(self._config.backlog)
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                reason = "the port is already in use (is another server running?)"
            else:
                reason = exc.strerror or str(exc)
            raise ListenError(exc.errno, f"cannot listen on {self._listen!r} (HTTP API): {reason}") from None
        sock.setblocking(False)
        self._socket = sock
        self.port = int(sock.getsockname()[1])
        return self.port

    async def start(self) -> None:
        """Serve on the bound socket (uvicorn's startup runs here, its main loop in a task)."""
        if self._socket is None:
            self.bind()
        assert self._socket is not None
        server = self._server
        self._task = asyncio.create_task(server.serve(sockets=[self._socket]), name="http-api")
        while not server.started:  # startup is quick (no lifespan, socket bound): a few loop turns
            if self._task.done():
                self._task.result()  # startup failed: raise why
                raise RuntimeError("the HTTP API stopped during startup")
            await asyncio.sleep(0.005)
        host = self._listen.rpartition(":")[0]
        log.info("HTTP API (OpenAI-compatible) on %s://%s:%d/v1", self.scheme, host, self.port)

    async def stop(self, grace: float) -> None:
        """Stop accepting, let open requests (streams included) finish for up to ``grace`` s, then
        cancel what is left (a cancelled generation frees its engine slot)."""
        if self._task is None:
            if self._socket is not None:
                self._socket.close()
            return
        self._config.timeout_graceful_shutdown = math.ceil(grace)
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
