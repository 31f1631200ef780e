"""A short churn soak: adapters replaced every 0.5 s, unloaded and loaded back, evicted (LRU:
three resident of four) while streams run on the base model and every adapter. Only OK,
NOT_FOUND (an adapter unloaded a moment ago) and the registry's RESOURCE_EXHAUSTED at the resident
cap (every resident adapter in flight) may come back, and the server must not crash.
The 10-minute, 16-stream version with RSS drift is bench/chaos.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from hybrid_assistant.testing.live import LiveServer, Workspace
from hybrid_assistant.testing.scenarios import AT_CAP, CHURN_ALLOWED, churn

DURATION_S = 20


@pytest.mark.parametrize(
    ("env", "cold"),
    [
        # The bench's setting: 4 hot adapters and 5 cold names over the default 8 resident slots.
        pytest.param({}, 5, id="lru-evicts-idle-adapters"),
        # Over-committed: three resident slots, four adapters in flight; AT_CAP is the registry's
        # documented refusal once the slot wait runs out.
        pytest.param({"HA_MAX_RESIDENT_ADAPTERS": "3"}, 0, id="fewer-slots-than-hot-adapters"),
    ],
)
def test_churn_under_streaming_traffic(
    workspace: Workspace, tmp_path: Path, env: dict[str, str], cold: int
) -> None:
    server = LiveServer(workspace, tmp_path / "data", preload=(), env=env)
    server.start()
    try:
        result = churn(server, duration_s=DURATION_S, streams=4, replace_every_s=0.5, cold_adapters=cold)
    finally:
        server.stop()
    summary = result.summary(warmup_s=5)
    assert not result.crashed, f"server exited ({result.exit_code}): {summary}"
    assert set(result.stream_codes) <= CHURN_ALLOWED | {AT_CAP}, summary
    assert set(result.admin_codes) <= CHURN_ALLOWED | {AT_CAP}, summary
    assert not result.unexpected, summary
    assert result.stream_codes["OK"] > 0, summary
    if cold:
        assert result.evictions_seen > 0, summary
    else:
        assert result.replaces >= DURATION_S, summary
    if result.health_ms.get("max_ms", 0) > 2000:
        pytest.fail(f"health blocked during churn: {result.health_ms}")
