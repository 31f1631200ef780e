"""What only the PostgreSQL store does, on a real server: migrations from replicas opening together,
the too-new-schema refusal, a malformed row that loses only itself, feedback waiting for another
replica's row, no lost experiment update across replicas, and a writer that rides out an outage.
What both backends promise is in test_experiments_store_contract.py."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from hybrid_assistant.pg_schema import SchemaTooNew
from hybrid_assistant.server.config import load_settings
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


def test_a_malformed_row_loses_only_itself(store: PostgresLogStore, pg_dsn: str) -> None:
    result = store.writer().insert([record("ok1"), record("bad", subject="nul\x00"), record("ok2")])
    assert result == ([], ["bad"])
    assert count(pg_dsn) == 2


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
