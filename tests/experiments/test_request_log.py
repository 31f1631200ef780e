"""The request log: batched off-thread writes, flush, overflow, retention, feedback semantics."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from hybrid_assistant.server.errors import AlreadyExists, NotFound
from hybrid_assistant.server.experiments.request_log import RequestLog
from hybrid_assistant.server.experiments.settings import RequestLogSettings
from hybrid_assistant.server.experiments.store import LogDatabase, LogRecord


def record(request_id: str, *, at: float | None = None, experiment: str = "", arm: str = "base") -> LogRecord:
    return LogRecord(
        request_id=request_id,
        time_unix=time.time() if at is None else at,
        experiment=experiment,
        arm=arm,
        in_test=bool(experiment),
        subject_key="u1",
        adapter="",
        retrieval=False,
        document_ids=("doc-1", "doc-2"),
        prompt_tokens=12,
        completion_tokens=7,
        ttft_ms=3.5,
        total_ms=20.0,
        status="ok",
    )


@pytest.fixture
def db(tmp_path: Path) -> LogDatabase:
    return LogDatabase(tmp_path / "log.sqlite3")


def count(db: LogDatabase, table: str = "requests") -> int:
    with db.reading() as conn:
        return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


def test_rows_are_written_in_batches_and_flushed(db: LogDatabase) -> None:
    log = RequestLog(db, RequestLogSettings(batch_size=64))
    log.start()
    try:
        for i in range(1000):
            log.record(record(f"r{i}"))
        assert log.flush(10)
        assert count(db) == 1000
        page = db.export_page("", 0, 0, (-1.0, ""), 10)
        assert page[0][0] == record("r0", at=page[0][0].time_unix)  # round trip, document ids included
        assert log.pending("r999") is None and log.dropped == 0
    finally:
        log.close()


def test_close_writes_what_is_queued(db: LogDatabase) -> None:
    log = RequestLog(db, RequestLogSettings())
    log.start()
    for i in range(300):
        log.record(record(f"r{i}"))
    log.close()
    assert count(db) == 300


def test_a_full_queue_drops_and_counts_without_blocking(db: LogDatabase) -> None:
    log = RequestLog(db, RequestLogSettings(queue_size=10))
    # The writer is not started: nothing drains the queue, as if the disk had stalled.
    started = time.perf_counter()
    for i in range(50):
        log.record(record(f"r{i}"))
    assert time.perf_counter() - started < 0.5
    assert log.dropped == 40
    assert log.pending("r5") is not None and log.pending("r45") is None
    log.start()
    log.close()
    assert count(db) == 10


def test_pending_rows_are_visible_until_committed(db: LogDatabase) -> None:
    log = RequestLog(db, RequestLogSettings())
    log.record(record("r1"))
    assert log.pending("r1") is not None
    # Feedback on a request still queued: its row is written with the feedback, durably.
    assert db.record_feedback("r1", "thumbs", 1.0, time.time(), log.pending("r1")) is False
    log.start()
    log.close()
    assert count(db) == 1 and count(db, "feedback") == 1
    assert log.duplicates == 0  # the writer meeting the row feedback stored is not a reused id


def test_feedback_is_idempotent_and_refuses_a_different_value(db: LogDatabase) -> None:
    LogDatabase.insert(sqlite3.connect(db.path, isolation_level=None), [record("r1")])
    assert db.record_feedback("r1", "rating", 4.0, 1.0, None) is False
    assert db.record_feedback("r1", "rating", 4.0, 2.0, None) is True
    assert db.record_feedback("r1", "thumbs", 0.0, 2.0, None) is False
    with pytest.raises(AlreadyExists, match=r"already has rating = 4\.0"):
        db.record_feedback("r1", "rating", 5.0, 3.0, None)
    with pytest.raises(NotFound, match="'nope' is not in the request log"):
        db.record_feedback("nope", "rating", 1.0, 3.0, None)
    assert count(db, "feedback") == 2
    assert db.export_page("", 0, 0, (-1.0, ""), 10)[0][1] == {"rating": 4.0, "thumbs": 0.0}


def test_retention_deletes_old_requests_with_their_feedback(db: LogDatabase) -> None:
    conn = sqlite3.connect(db.path, isolation_level=None)
    old = time.time() - 3 * 86400
    LogDatabase.insert(conn, [record("old", at=old), record("new")])
    db.record_feedback("old", "thumbs", 1.0, old, None)
    db.record_feedback("new", "thumbs", 1.0, time.time(), None)
    log = RequestLog(db, RequestLogSettings(retention_days=2))
    log.start()  # the writer prunes at start, then every retention_check_s
    assert log.flush(10)
    log.close()
    with db.reading() as reader:
        assert [r[0] for r in reader.execute("SELECT request_id FROM requests")] == ["new"]
        assert [r[0] for r in reader.execute("SELECT request_id FROM feedback")] == ["new"]


def test_record_is_cheap_and_thread_safe(db: LogDatabase) -> None:
    log = RequestLog(db, RequestLogSettings())
    log.start()

    def produce(prefix: str) -> None:
        for i in range(500):
            log.record(record(f"{prefix}-{i}"))

    threads = [threading.Thread(target=produce, args=(f"t{t}",)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    log.close()
    assert count(db) == 2000 and log.dropped == 0


def test_experiments_are_stored(db: LogDatabase) -> None:
    db.save_experiment("e1", '{"x": 1}', create=True)
    with pytest.raises(AlreadyExists):
        db.save_experiment("e1", "{}", create=True)
    db.save_experiment("e1", '{"x": 2}', create=False)
    db.close()
    assert LogDatabase(db.path).experiments() == ['{"x": 2}']


def test_a_stored_row_is_never_replaced_by_one_with_the_same_id(db: LogDatabase) -> None:
    conn = sqlite3.connect(db.path, isolation_level=None)
    assert LogDatabase.insert(conn, [record("r1", experiment="e", arm="a")]) == []
    assert LogDatabase.insert(conn, [record("r1", arm="hijack"), record("r2")]) == ["r1"]
    assert db.has_request("r1") and db.has_request("r2") and not db.has_request("r3")
    rows = {r.request_id: r for r, _ in db.export_page("", 0, 0, (-1.0, ""), 10)}
    assert (rows["r1"].experiment, rows["r1"].arm) == ("e", "a")
    log = RequestLog(db, RequestLogSettings())
    log.start()
    try:
        first = record("r3", arm="first")
        log.record(first)
        log.record(record("r3", arm="second"))  # while the first is queued: dropped, counted
        log.record(record("r1", arm="third"))  # already stored: not written, counted
        assert log.flush(10)
        rows = {r.request_id: r for r, _ in db.export_page("", 0, 0, (-1.0, ""), 10)}
        assert rows["r3"].arm == "first" and rows["r1"].arm == "a"
        assert log.duplicates == 2
    finally:
        log.close()


def test_request_ids_are_claimed_once_in_flight_queued_or_stored(db: LogDatabase) -> None:
    import asyncio
    from typing import Any, cast

    from hybrid_assistant.server.experiments.service import ExperimentManager

    log = RequestLog(db, RequestLogSettings())
    service = ExperimentManager(cast(Any, None), db, log)
    LogDatabase.insert(sqlite3.connect(db.path, isolation_level=None), [record("stored")])

    async def scenario() -> list[object]:
        # Two concurrent claims of one id: exactly one wins (the set is claimed before any await).
        racing = await asyncio.gather(
            *(service.claim_request_id("racing") for _ in range(5)), return_exceptions=True
        )
        with pytest.raises(AlreadyExists, match="in use by a request being served"):
            await service.claim_request_id("racing")
        log.record(record("racing"))  # what on_outcome does before the release
        service.release_request_id("racing")
        with pytest.raises(AlreadyExists, match="used by an earlier request"):
            await service.claim_request_id("racing")  # queued for the writer
        with pytest.raises(AlreadyExists, match="used by an earlier request"):
            await service.claim_request_id("stored")
        huge = "x" * 100_000
        await service.claim_request_id(huge)
        with pytest.raises(AlreadyExists) as info:
            await service.claim_request_id(huge)
        assert len(str(info.value)) < 1000
        await service.claim_request_id("fresh")
        service.release_request_id("fresh")
        return racing

    racing = asyncio.run(scenario())
    assert [r is None for r in racing].count(True) == 1
    assert all(isinstance(r, AlreadyExists) for r in racing if r is not None)
