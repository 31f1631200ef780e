"""Test-only glue: a live server on its own event loop in a background thread.

The tiny model and adapter builders the tests share with the benches live in
:mod:`hybrid_assistant.testing.models`.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any


class ServerThread:
    """An App on its own event loop in a background thread, on a free port."""

    def __init__(self, settings: Any) -> None:
        from hybrid_assistant.server.app import App

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="test-server", daemon=True)
        self.thread.start()
        self.app: App = self.call(self._make(settings))
        self.port = self.call(self.app.start())
        self.target = f"127.0.0.1:{self.port}"
        # The OpenAI-compatible API's base URL, when http_listen is on (tests use port 0).
        self.http_url = f"http://127.0.0.1:{self.app.http_port}" if self.app.http_port else ""

    @staticmethod
    async def _make(settings: Any) -> Any:
        from hybrid_assistant.server.app import App

        return App(settings)

    def call(self, coro: Any, timeout: float = 120) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def wait_ready(self, timeout: float = 120) -> None:
        self.call(asyncio.wait_for(self.app.wait_ready(), timeout), timeout + 5)

    def stop(self) -> None:
        try:
            self.call(self.app.stop(grace=1), 60)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(30)
