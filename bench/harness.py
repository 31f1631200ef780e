"""Shared by the benchmarks: percentiles, a table printer, JSON results, the CPU's GEMM rate."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from hybrid_assistant.server.cpu import cpu_info

RESULTS = Path(__file__).resolve().parent / "results"

# Open-ended requests for streaming benchmarks: each keeps a model busy for its max_tokens.
STREAM_PROMPTS = [
    "Write a long story about a lighthouse keeper.",
    "Explain in detail how bread is made, step by step.",
    "Describe a journey through a forest at night.",
    "Write a long letter to a friend about your holiday.",
    "Tell me everything you know about the ocean.",
    "Describe a busy market in a big city.",
    "Write a detailed recipe for vegetable soup.",
    "Explain how a bicycle works, part by part.",
]
ROOT = Path(__file__).resolve().parents[1]


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def request_plan(streams: int, per_stream: int, adapters: list[str]) -> list[list[tuple[str, str]]]:
    """Each stream's (prompt, adapter) requests: prompts and adapters round-robin over all requests."""
    return [
        [
            (STREAM_PROMPTS[i % len(STREAM_PROMPTS)], adapters[i % len(adapters)] if adapters else "")
            for i in range(s * per_stream, (s + 1) * per_stream)
        ]
        for s in range(streams)
    ]


def load_row(
    records: Sequence[dict[str, float]], streams: int, adapters: int, wall: float, max_tokens: int
) -> dict[str, Any]:
    """One load point's summary from its per-request records (ttft, itl, tokens; seconds)."""
    tokens = sum(r["tokens"] for r in records)
    ttft = [r["ttft"] for r in records]
    itl = [r["itl"] for r in records if r["itl"] == r["itl"]]
    uneven = sum(r["tokens"] != max_tokens for r in records)
    if uneven:
        print(f"warning: {uneven} of {len(records)} requests did not make {max_tokens} tokens", flush=True)
    return {
        "streams": streams,
        "adapters": adapters,
        "requests": len(records),
        "tokens": tokens,
        "uneven_requests": uneven,
        "wall_s": wall,
        "tokens_per_s": tokens / wall,
        "ttft_p50_ms": median(ttft) * 1000,
        "ttft_p99_ms": percentile(ttft, 99) * 1000,
        "itl_p50_ms": median(itl) * 1000,
        "itl_p99_ms": percentile(itl, 99) * 1000,
    }


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str], title: str = "") -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v)

    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = [title] if title else []
    lines.append(" | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    lines.append("-+-".join("-" * w for w in widths))
    lines += [" | ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    cpu = cpu_info()
    return {
        "cpu": cpu.model,
        "cpu_isa": list(cpu.isa),
        "cpu_torch_capability": cpu.torch_capability,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def write_results(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2))
    return path


def matmul_gflops(m: int, k: int, n: int, dtype: torch.dtype = torch.float32, seconds: float = 1.0) -> float:
    """Sustained GEMM rate at one shape: the CPU's own ceiling for work of that shape."""
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    for _ in range(3):
        a @ b
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        a @ b
        count += 1
    return 2 * m * k * n * count / (time.perf_counter() - started) / 1e9
