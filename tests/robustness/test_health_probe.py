"""Health-check latency while each hostile request of issue 10 runs (600 passages, a 10 MB
message, huge Score continuations, 10,000 stop strings, a 600-key filter).

A health check is the orchestrator's only view of the server: if one request freezes the event
loop, the orchestrator restarts a server that was only busy. The bound here is generous (2 s)
so a loaded CI machine does not fail it; bench/chaos.py reports the real p50/p99/max against
the target p99 < 100 ms.
"""

from __future__ import annotations

import pytest

from hybrid_assistant.testing.live import LiveServer
from hybrid_assistant.testing.scenarios import probe_hostile
from hybrid_assistant.testing.statuses import DOCUMENTED

HEALTH_MAX_MS = 2000


@pytest.fixture(scope="module")
def rows(live_server: LiveServer) -> list[dict[str, object]]:
    return probe_hostile(live_server, timeout_s=90)


def _row(rows: list[dict[str, object]], prefix: str) -> dict[str, object]:
    return next(r for r in rows if str(r["request"]).startswith(prefix))


@pytest.mark.parametrize(
    "prefix",
    ["generate-600-passages", "generate-10MB", "score-huge", "generate-10000-stops", "generate-600-filter"],
)
def test_health_answers_while_a_hostile_request_runs(rows: list[dict[str, object]], prefix: str) -> None:
    row = _row(rows, prefix)
    assert row["n"], f"no health check was answered while {prefix} ran: {row}"
    assert float(row["max_ms"]) < HEALTH_MAX_MS, f"health blocked while {prefix} ran: {row}"  # type: ignore[arg-type]
    assert row["failed_checks"] == 0, row


@pytest.mark.parametrize(
    "prefix",
    ["generate-600-passages", "generate-10MB", "score-huge", "generate-10000-stops", "generate-600-filter"],
)
def test_hostile_request_gets_a_documented_status(rows: list[dict[str, object]], prefix: str) -> None:
    import grpc

    row = _row(rows, prefix)
    assert grpc.StatusCode[str(row["code"])] in DOCUMENTED, row


def test_server_survives_the_hostile_requests(rows: list[dict[str, object]], live_server: LiveServer) -> None:
    assert live_server.alive(), live_server.log_tail()
