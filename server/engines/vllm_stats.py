"""vLLM's prefix-cache counts, read through its stat-logger interface into the server's own metrics.

vLLM computes, per scheduler step, how many prompt tokens looked for cached blocks ("queries")
and how many found them ("hits"). A custom stat logger given to ``AsyncLLM`` receives them
(it also turns vLLM's stats collection on, but not its default loggers). The interface is
vLLM's documented extension point for API users; ``SchedulerStats`` itself is not a stable
type, so every field is read defensively.
"""

from __future__ import annotations

import threading
from typing import Any

from vllm.v1.metrics.loggers import StatLoggerBase

from hybrid_assistant.server import metrics


class PrefixCacheCounts:
    """Totals since start; written by vLLM's output handler, read by GetServerInfo."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.hit_tokens = 0
        self.queried_tokens = 0

    def add(self, queries: int, hits: int) -> None:
        with self._lock:
            self.queried_tokens += queries
            self.hit_tokens += hits
        metrics.PREFIX_CACHE_TOKENS.labels(result="hit").inc(hits)
        metrics.PREFIX_CACHE_TOKENS.labels(result="miss").inc(max(0, queries - hits))

    def snapshot(self) -> tuple[int, int]:
        """(hit tokens, miss tokens)."""
        with self._lock:
            return self.hit_tokens, max(0, self.queried_tokens - self.hit_tokens)


def prefix_cache_logger(counts: PrefixCacheCounts) -> type[StatLoggerBase]:
    """A stat-logger class (vLLM instantiates it per engine core) that feeds ``counts``."""

    class PrefixCacheLogger(StatLoggerBase):
        def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
            self.counts = counts

        def record(
            self,
            scheduler_stats: Any,
            iteration_stats: Any,
            mm_cache_stats: Any = None,
            engine_idx: int = 0,
        ) -> None:
            stats = getattr(scheduler_stats, "prefix_cache_stats", None)
            if stats is not None:
                self.counts.add(int(getattr(stats, "queries", 0)), int(getattr(stats, "hits", 0)))

        def log_engine_initialized(self) -> None:
            pass

    return PrefixCacheLogger
