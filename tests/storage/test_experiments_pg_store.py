"""The experiments' PostgreSQL store on a real server: migrations, the too-new-schema refusal,
inserts that never replace a row, feedback (idempotent, waiting for another replica's row),
reports and exports, retention, atomic experiment updates, and a writer that rides out an outage."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from hybrid_assistant.server.config import load_settings
from hybrid_assistant.server.database import SchemaTooNew
from hybrid_assistant.server.errors import AlreadyExists, NotFound, Unavailable
from hybrid_assistant.server.experiments.pg_store import MIGRATIONS, PostgresLogStore
from hybrid_assistant.server.experiments.request_log import RequestLog
from hybrid_assistant.server.experiments.service import ExperimentManager
from hybrid_assistant.server.experiments.settings import RequestLogSettings
from hybrid_assistant.server.experiments.store import LogRecord
from hybrid_assistant.testing.postgres import PostgresServer, PostgresUnavailable


def record(
    request_id: str, *, at: float | None = None, experiment: str = "", subject: str = "u1"
) -> LogRecord:
    return LogRecord(
        request_id=request_id,
        time_unix=time.time() if at is None else at,
        experiment=experiment,
        arm="a" if experiment else "base",
        in_test=bool(experiment),
        subject_key=subject,
        adapter="",
        retrieval=True,
        document_ids=("doc-1", "doc-2"),
        prompt_tokens=12,
        completion_tokens=7,
        ttft_ms=3.5,
        total_ms=20.0,
        status="ok",
    )


@pytest.fixture
def store(pg_dsn: str) -> Iterator[PostgresLogStore]:
    store = PostgresLogStore.open(pg_dsn)
    yield store
    store.close()


def count(dsn: str, table: str = "requests") -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


def test_replicas_opening_together_migrate_once(pg_dsn: str) -> None:
    stores: list[PostgresLogStore] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            stores.append(PostgresLogStore.open(pg_dsn))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    for store in stores:
        store.close()
    assert errors == [] and len(stores) == 4
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT component, version FROM schema_version").fetchall() == [
            ("experiments", len(MIGRATIONS))
        ]


def test_a_newer_schema_is_refused_with_a_clear_message(pg_dsn: str) -> None:
    PostgresLogStore.open(pg_dsn).close()
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("UPDATE schema_version SET version = 99 WHERE component = 'experiments'")
    with pytest.raises(SchemaTooNew, match=r"experiments schema is at version 99.*knows versions up to 1"):
        PostgresLogStore.open(pg_dsn)


def test_insert_never_replaces_a_row_and_reads_round_trip(store: PostgresLogStore, pg_dsn: str) -> None:
    writer = store.writer()
    first = record("r1", experiment="e")
    assert writer.insert([first, record("r2", experiment="e"), record("r3")]) == ([], [])
    hijack = record("r1", experiment="e", subject="attacker")
    assert writer.insert([hijack, record("r4")]) == (["r1"], [])
    assert writer.insert([first]) == ([], [])  # the identical row (feedback wrote it first) is none
    requests, excluded = store.experiment_requests("e")
    assert sorted(r.request_id for r in requests) == ["r1", "r2"] and excluded == 0
    assert next(r for r in requests if r.request_id == "r1") == first
    assert store.has_request("r4") and not store.has_request("nope")
    assert count(pg_dsn) == 4


def test_a_malformed_row_loses_only_itself(store: PostgresLogStore, pg_dsn: str) -> None:
    result = store.writer().insert([record("ok1"), record("bad", subject="nul\x00"), record("ok2")])
    assert result == ([], ["bad"])
    assert count(pg_dsn) == 2


def test_feedback_is_durable_idempotent_and_refuses_a_change(store: PostgresLogStore, pg_dsn: str) -> None:
    store.writer().insert([record("r1", experiment="e")])
    assert store.record_feedback("r1", "thumbs", 1.0, time.time(), None) is False
    assert store.record_feedback("r1", "thumbs", 1.0, time.time(), None) is True
    with pytest.raises(AlreadyExists, match=r"already has thumbs = 1\.0"):
        store.record_feedback("r1", "thumbs", 0.0, time.time(), None)
    # Committed: another connection sees it.
    assert count(pg_dsn, "feedback") == 1
    assert store.experiment_feedback("e") == [("r1", "thumbs", 1.0)]
    page = store.export_page("e", 0, 0, (float("-inf"), ""), 10)
    assert [(r.request_id, fb) for r, fb in page] == [("r1", {"thumbs": 1.0})]


def test_feedback_writes_this_replicas_pending_row_with_it(store: PostgresLogStore) -> None:
    pending = record("queued", experiment="e")
    assert store.record_feedback("queued", "stars", 4.0, time.time(), pending) is False
    # The writer's copy of the same row comes later: not a duplicate.
    assert store.writer().insert([pending]) == ([], [])


def manager(store: PostgresLogStore, tmp_path: Path, wait_s: float) -> ExperimentManager:
    settings = load_settings(
        None, data_dir=tmp_path, database_url="postgresql://unused", request_log={"feedback_wait_s": wait_s}
    )
    return ExperimentManager(settings, store, RequestLog(store, settings.request_log))


def test_feedback_waits_for_a_row_another_replica_writes_late(pg_dsn: str, tmp_path: Path) -> None:
    serving = PostgresLogStore.open(pg_dsn)
    other = PostgresLogStore.open(pg_dsn)
    try:
        late = threading.Timer(0.5, lambda: serving.writer().insert([record("late")]))
        late.start()
        started = time.monotonic()
        assert asyncio.run(manager(other, tmp_path, 3.0).record_feedback("late", "thumbs", 1.0)) is False
        assert 0.4 < time.monotonic() - started < 3.0
        late.join()
    finally:
        serving.close()
        other.close()


def test_unknown_request_is_not_found_after_the_wait(store: PostgresLogStore, tmp_path: Path) -> None:
    with pytest.raises(NotFound, match=r"'ghost' is not in the request log$"):
        store.record_feedback("ghost", "thumbs", 1.0, time.time(), None)
    started = time.monotonic()
    with pytest.raises(NotFound, match=r"'ghost' is not in the request log \(waited 0\.3 s"):
        asyncio.run(manager(store, tmp_path, 0.3).record_feedback("ghost", "thumbs", 1.0))
    assert 0.3 <= time.monotonic() - started < 2.0


def test_export_pages_and_excluded_counts(store: PostgresLogStore) -> None:
    base = 1_700_000_000.0
    rows = [record(f"r{i:02d}", at=base + i // 2, experiment="e") for i in range(25)]
    stopped = LogRecord(**{**record("paused", experiment="e").__dict__, "in_test": False})
    store.writer().insert([*rows, stopped])
    seen, after = [], (float("-inf"), "")
    while page := store.export_page("e", base + 1, base + 11, after, 4):
        seen += [r.request_id for r, _ in page]
        after = (page[-1][0].time_unix, page[-1][0].request_id)
    assert seen == [f"r{i:02d}" for i in range(2, 22)]
    assert store.experiment_requests("e")[1] == 1


def test_retention_deletes_requests_with_their_feedback(store: PostgresLogStore, pg_dsn: str) -> None:
    writer = store.writer()
    writer.insert([record("old", at=time.time() - 10 * 86400), record("new")])
    store.record_feedback("old", "thumbs", 1.0, time.time(), None)
    assert writer.delete_before(time.time() - 86400) == 1
    assert count(pg_dsn) == 1 and count(pg_dsn, "feedback") == 0


def test_experiment_updates_from_many_replicas_lose_nothing(pg_dsn: str) -> None:
    stores = [PostgresLogStore.open(pg_dsn) for _ in range(3)]
    try:
        stores[0].save_experiment("e", json.dumps({"n": 0}), create=True)
        with pytest.raises(AlreadyExists):
            stores[1].save_experiment("e", "{}", create=True)

        def bump(store: PostgresLogStore) -> None:
            for _ in range(10):
                store.update_experiment("e", lambda d: json.dumps({"n": json.loads(d)["n"] + 1}))

        threads = [threading.Thread(target=bump, args=(s,)) for s in stores]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert [json.loads(d) for d in stores[2].experiments()] == [{"n": 30}]
        with pytest.raises(NotFound):
            stores[0].update_experiment("missing", lambda d: d)
    finally:
        for store in stores:
            store.close()


def test_the_writer_rides_out_a_database_outage() -> None:
    """Own cluster (this test stops it): serving never waits, rows past the queue are dropped and
    counted, the kept ones are written once the database is back, feedback is UNAVAILABLE meanwhile."""
    try:
        server = PostgresServer.start_new()
    except PostgresUnavailable as exc:
        pytest.skip(f"PostgreSQL unavailable: {exc}")
    try:
        dsn = server.create_database()
        store = PostgresLogStore.open(dsn)
        log = RequestLog(store, RequestLogSettings(queue_size=50, batch_size=20, retention_days=0))
        log.start()
        try:
            log.record(record("before"))
            assert log.flush(10)
            server.stop()
            started = time.monotonic()
            for i in range(200):
                log.record(record(f"down{i}"))
            assert time.monotonic() - started < 0.5  # serving never waits for the log
            with pytest.raises(Unavailable, match="unreachable"):
                store.record_feedback("before", "thumbs", 1.0, time.time(), None)
            time.sleep(1.0)  # the writer retries while the queue stays full
            assert log.dropped >= 200 - 50 - 20
            server.start()
            assert log.flush(30)
            assert count(dsn) == 1 + 200 - log.dropped
            assert store.record_feedback("before", "thumbs", 1.0, time.time(), None) is False
        finally:
            log.close()
            store.close()
    finally:
        server.remove()
