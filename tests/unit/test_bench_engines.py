"""The benchmarks' shared pieces: the request plan, the load summary, the engines' comparison rows."""

from __future__ import annotations

import math
from typing import Any

import pytest

from bench.engines import summarize
from bench.harness import STREAM_PROMPTS, load_row, request_plan


def test_request_plan_spreads_prompts_and_adapters_round_robin() -> None:
    plan = request_plan(streams=3, per_stream=2, adapters=["a", "b"])
    assert [len(stream) for stream in plan] == [2, 2, 2]
    flat = [request for stream in plan for request in stream]
    assert [prompt for prompt, _ in flat] == STREAM_PROMPTS[:6]
    assert [adapter for _, adapter in flat] == ["a", "b", "a", "b", "a", "b"]
    assert {adapter for stream in request_plan(2, 1, []) for _, adapter in stream} == {""}


def test_load_row_summarises_and_counts_uneven_requests(capsys: pytest.CaptureFixture[str]) -> None:
    records = [
        {"ttft": 0.1, "itl": 0.02, "tokens": 8, "latency": 0.3},
        {"ttft": 0.3, "itl": float("nan"), "tokens": 1, "latency": 0.3},  # one token: no ITL
    ]
    row = load_row(records, streams=2, adapters=1, wall=0.5, max_tokens=8)
    assert row["tokens"] == 9 and row["tokens_per_s"] == pytest.approx(18.0)
    assert row["uneven_requests"] == 1
    assert row["ttft_p50_ms"] == pytest.approx(200.0)
    assert row["itl_p50_ms"] == pytest.approx(20.0)  # the NaN is left out, not propagated
    assert "1 of 2 requests did not make 8 tokens" in capsys.readouterr().out


def _point(tok_s: float) -> dict[str, Any]:
    return {
        "tokens_per_s": tok_s,
        "ttft_p50_ms": 1000 / tok_s,
        "itl_p50_ms": 1.0,
        "ttft_p99_ms": 2.0,
        "itl_p99_ms": 2.0,
        "uneven_requests": 0,
    }


def test_summarize_compares_every_peer_with_the_embedded_engine() -> None:
    points = {
        (16, 4): {
            "transformers": [_point(90), _point(110)],
            "vllm": [_point(50), _point(50)],
            "llama.cpp": [_point(40), _point(60)],
        }
    }
    (row,) = summarize(points)
    assert row["tf_tok_s"] == 100 and row["llama_tok_s"] == 50
    assert row["tf_over_vllm"] == 2.0 and row["tf_over_llama"] == 2.0
    assert row["vllm_over_tf"] == 0.5
    assert row["llama_spread"] == pytest.approx(0.4) and row["vllm_spread"] == 0.0


def test_summarize_without_llama_cpp_has_no_llama_columns() -> None:
    (row,) = summarize({(1, 0): {"transformers": [_point(20)], "vllm": [_point(10)]}})
    assert not any(key.startswith("llama") or key.endswith("llama") for key in row)
    assert math.isclose(row["tf_over_vllm"], 2.0)
