"""Prometheus metrics (served on ``metrics_port`` when configured).

Each gauge is set by the one component that sees every change: ``SCHEDULER`` by the embedded
engine's scheduler (requests waiting, prefilling and decoding; vLLM reports its own), and
``ADAPTERS_RESIDENT`` by the adapter registry (every install and uninstall). Counters and
histograms are observed per request by the assistant core.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge, Histogram, start_http_server

if TYPE_CHECKING:
    from hybrid_assistant.server.core_types import GenerateOutcome

REQUESTS = Counter(
    "hybrid_assistant_requests_total",
    "Requests by method, adapter and outcome",
    ["method", "adapter", "status"],
)
TOKENS = Counter("hybrid_assistant_generated_tokens_total", "Generated tokens", ["adapter"])
PROMPT_TOKENS = Counter("hybrid_assistant_prompt_tokens_total", "Prompt tokens", ["adapter"])
TTFT = Histogram(
    "hybrid_assistant_time_to_first_token_seconds",
    "Accepted to first token",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16),
)
LATENCY = Histogram(
    "hybrid_assistant_request_seconds", "Accepted to finished", buckets=(0.25, 0.5, 1, 2, 4, 8, 16, 32, 64)
)
RETRIEVAL = Histogram(
    "hybrid_assistant_retrieval_seconds",
    "Retrieval time",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
)
SCHEDULER = Gauge("hybrid_assistant_scheduler_sequences", "Sequences in the engine", ["state"])
PREFIX_CACHE_TOKENS = Counter(
    "hybrid_assistant_prefix_cache_tokens_total",
    "Prompt tokens looked up in the embedded engine's prefix cache: reused (hit) or computed (miss)",
    ["result"],
)
PREFIX_CACHE_BYTES = Gauge("hybrid_assistant_prefix_cache_bytes", "Memory held by cached prefix blocks")
ADAPTERS_RESIDENT = Gauge("hybrid_assistant_adapters_resident", "Adapters in memory")


def observe_generation(outcome: GenerateOutcome) -> None:
    TOKENS.labels(adapter=outcome.adapter).inc(outcome.completion_tokens)
    PROMPT_TOKENS.labels(adapter=outcome.adapter).inc(outcome.prompt_tokens)
    TTFT.observe(outcome.ttft_ms / 1000)
    LATENCY.observe(outcome.total_ms / 1000)
    if outcome.contexts:
        RETRIEVAL.observe(outcome.retrieval_ms / 1000)


def serve(port: int) -> None:
    start_http_server(port)
