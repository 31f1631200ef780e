"""Disk full while ingesting and while logging requests, simulated with RLIMIT_FSIZE set on the
running server (prlimit; Python ignores SIGXFSZ, so writes fail with EFBIG): the failing call
gets a clear, documented status, the server stays healthy, nothing is corrupt, and writes work
again once the limit is lifted. A loop-mounted filesystem would need root; this needs nothing."""

from __future__ import annotations

from pathlib import Path

from hybrid_assistant.testing.live import LiveServer, Workspace
from hybrid_assistant.testing.scenarios import disk_full_ingest, disk_full_logging


def test_disk_full_during_ingest(workspace: Workspace, tmp_path: Path) -> None:
    result = disk_full_ingest(LiveServer(workspace, tmp_path / "data", preload=()))
    assert result.healthy_while_full is None, result
    assert result.clear_error, f"disk full gave {result.full_code}: {result.full_details}"
    assert result.recovered_code == "OK", result
    assert result.integrity == "ok" and not result.problems, result


def test_disk_full_during_request_logging(workspace: Workspace, tmp_path: Path) -> None:
    result = disk_full_logging(LiveServer(workspace, tmp_path / "data", preload=(), knowledge=False))
    assert result.healthy_while_full is None, result
    assert result.clear_error, f"feedback on a full disk gave {result.full_code}: {result.full_details}"
    assert result.served_while_full, result
    assert result.recovered_code == "OK", result
    assert result.integrity == "ok" and not result.problems, result
