"""kill -9 while the server writes feedback or ingests, and while an adapter trains.

Acknowledged means the client got OK. After SIGKILL every acknowledged feedback (and the request
row under it) and every acknowledged Ingest must be on disk, the SQLite files must pass
``PRAGMA integrity_check``, and the index must hold no batch in part. A killed training run must
leave either nothing or a complete adapter the server accepts under the adapter's name. The
library-level ingest crash test is tests/retrieval/test_crash.py; bench/chaos.py runs 50 kills.
"""

from __future__ import annotations

import random
from pathlib import Path

from hybrid_assistant.testing.live import LiveServer, Workspace
from hybrid_assistant.testing.scenarios import (
    check_index,
    feedback_kill_round,
    ingest_kill_round,
    integrity,
    missing_feedback,
    training_kill_round,
)

KILLS = 2


def test_kill_9_during_feedback_loses_no_acknowledged_write(workspace: Workspace, tmp_path: Path) -> None:
    rng = random.Random(0)
    server = LiveServer(workspace, tmp_path / "data", preload=(), knowledge=False)
    every: dict[tuple[str, str], float] = {}
    for round_ in range(KILLS):
        result, acked = feedback_kill_round(server, f"k{round_}", rng)
        every.update(acked)
        assert result.integrity == "ok", result
        assert not result.lost, result.lost[:5]
        assert not result.details, result.details[:5]
        assert result.acknowledged > 0, f"nothing was acknowledged before the kill: {result}"
    server.start()  # reopens after the last kill; everything acknowledged is still there
    server.stop()
    path = server.data_dir / "request-log.sqlite3"
    assert integrity(path) == "ok"
    assert not missing_feedback(path, every)


def test_kill_9_during_ingest_keeps_every_acknowledged_batch(workspace: Workspace, tmp_path: Path) -> None:
    rng = random.Random(1)
    server = LiveServer(workspace, tmp_path / "data", preload=())
    every: set[str] = set()
    for round_ in range(KILLS):
        result, acked = ingest_kill_round(server, f"k{round_}", rng)
        every |= acked
        assert not result.details, result.details[:5]
        status, problems = check_index(server.data_dir, every)
        assert status == "ok" and not problems, (status, problems)
    assert every, "no batch was acknowledged before the kills"


def test_kill_9_during_training_never_leaves_a_half_written_adapter(
    workspace: Workspace, tmp_path: Path
) -> None:
    out = training_kill_round(workspace.model_dir, tmp_path / "adapters", "trained", random.Random(2))
    assert out["published"] >= 1, out
    assert out["exists"] and out["loads"], f"an acknowledged adapter is missing or broken: {out}"


def test_kill_9_mid_publish_keeps_the_previous_adapter(workspace: Workspace, tmp_path: Path) -> None:
    out = training_kill_round(
        workspace.model_dir, tmp_path / "adapters", "trained", random.Random(3), mode="die-mid-publish"
    )
    assert out["published"] == 1, out
    assert out["exists"] and out["loads"], f"the published adapter vanished: {out}"
