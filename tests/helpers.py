"""Test-only glue: a live server on its own event loop in a background thread.

The tiny model and adapter builders the tests share with the benches live in
:mod:`hybrid_assistant.testing.models`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def tiny_settings(model_dir: Path, data_dir: Path, adapter_root: Path, **overrides: Any) -> Any:
    """Settings every tiny-model test server starts from: a free port, small limits, one thread,
    the hashing embedder (no model download). ``overrides`` are Settings fields."""
    from hybrid_assistant.server.config import load_settings

    values: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "model_path": model_dir,
        "data_dir": data_dir,
        "adapter_roots": [adapter_root],
        "max_total_tokens": 512,
        "max_prompt_tokens": 384,
        "default_max_tokens": 16,
        "threads": 1,
        "embedder": "hashing",
    }
    return load_settings(None, **{**values, **overrides})


def preloads(adapters: Mapping[str, Path]) -> list[Any]:
    """``preload_adapters`` for adapters built by the fixtures (name -> folder)."""
    from hybrid_assistant.server.config import AdapterPreload

    return [AdapterPreload(name=name, path=str(path)) for name, path in adapters.items()]


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
