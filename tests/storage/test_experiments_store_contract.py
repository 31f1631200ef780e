"""The experiments' store contract, written once and run against both backends (SQLite, the
embedded default, and PostgreSQL on a real server): rows never replaced, feedback idempotent and
durable with its request, keyset export pages, retention with feedback, experiment definitions."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hybrid_assistant.server.errors import AlreadyExists, NotFound
from hybrid_assistant.server.experiments.log_store import LogStore
from hybrid_assistant.server.experiments.pg_store import PostgresLogStore
from hybrid_assistant.server.experiments.store import LogDatabase, LogRecord
from tests.storage.test_experiments_pg_store import record

EVERYTHING = (float("-inf"), "")


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LogStore]:
    opened: LogStore
    if request.param == "sqlite":
        opened = LogDatabase(tmp_path / "log.sqlite3")
    else:
        opened = PostgresLogStore.open(request.getfixturevalue("pg_dsn"))
    yield opened
    opened.close()


def stored(store: LogStore) -> dict[str, dict[str, float]]:
    """Every stored request id with its feedback."""
    return {r.request_id: feedback for r, feedback in store.export_page("", 0, 0, EVERYTHING, 10_000)}


def test_insert_never_replaces_a_row_and_reads_round_trip(store: LogStore) -> None:
    writer = store.writer()
    try:
        first = record("r1", experiment="e")
        assert writer.insert([first, record("r2", experiment="e"), record("r3")]) == ([], [])
        hijack = record("r1", experiment="e", subject="attacker")
        assert writer.insert([hijack, record("r4")]) == (["r1"], [])
        assert writer.insert([first]) == ([], [])  # the identical row (feedback wrote it first) is none
    finally:
        writer.close()
    requests, excluded = store.experiment_requests("e")
    assert sorted(r.request_id for r in requests) == ["r1", "r2"] and excluded == 0
    assert next(r for r in requests if r.request_id == "r1") == first
    assert store.has_request("r4") and not store.has_request("nope")
    assert sorted(stored(store)) == ["r1", "r2", "r3", "r4"]


def test_feedback_is_idempotent_and_refuses_a_change(store: LogStore) -> None:
    store.writer().insert([record("r1", experiment="e")])
    assert store.record_feedback("r1", "thumbs", 1.0, time.time(), None) is False
    assert store.record_feedback("r1", "thumbs", 1.0, time.time(), None) is True
    with pytest.raises(AlreadyExists, match=r"already has thumbs = 1\.0"):
        store.record_feedback("r1", "thumbs", 0.0, time.time(), None)
    assert store.experiment_feedback("e") == [("r1", "thumbs", 1.0)]
    assert stored(store) == {"r1": {"thumbs": 1.0}}
    with pytest.raises(NotFound, match=r"'ghost' is not in the request log"):
        store.record_feedback("ghost", "thumbs", 1.0, time.time(), None)


def test_feedback_writes_this_replicas_pending_row_with_it(store: LogStore) -> None:
    pending = record("queued", experiment="e")
    assert store.record_feedback("queued", "stars", 4.0, time.time(), pending) is False
    # The writer's copy of the same row comes later: not a duplicate.
    assert store.writer().insert([pending]) == ([], [])
    assert stored(store) == {"queued": {"stars": 4.0}}


def test_export_pages_and_excluded_counts(store: LogStore) -> None:
    base = 1_700_000_000.0
    rows = [record(f"r{i:02d}", at=base + i // 2, experiment="e") for i in range(25)]
    stopped = LogRecord(**{**record("paused", experiment="e").__dict__, "in_test": False})
    store.writer().insert([*rows, stopped])
    seen: list[str] = []
    after = EVERYTHING
    while page := store.export_page("e", base + 1, base + 11, after, 4):
        seen += [r.request_id for r, _ in page]
        after = (page[-1][0].time_unix, page[-1][0].request_id)
    assert seen == [f"r{i:02d}" for i in range(2, 22)]
    assert store.experiment_requests("e")[1] == 1


def test_retention_deletes_requests_with_their_feedback(store: LogStore) -> None:
    writer = store.writer()
    writer.insert([record("old", at=time.time() - 10 * 86400), record("new")])
    store.record_feedback("old", "thumbs", 1.0, time.time(), None)
    assert writer.delete_before(time.time() - 86400) == 1
    assert stored(store) == {"new": {}}
    with pytest.raises(NotFound):
        store.record_feedback("old", "thumbs", 1.0, time.time(), None)


def test_experiment_definitions(store: LogStore) -> None:
    store.save_experiment("b", json.dumps({"n": 0}), create=True)
    store.save_experiment("a", "{}", create=True)
    with pytest.raises(AlreadyExists, match="'a' already exists"):
        store.save_experiment("a", "{}", create=True)
    bumped = store.update_experiment("b", lambda d: json.dumps({"n": json.loads(d)["n"] + 1}))
    assert bumped == '{"n": 1}' and store.experiments() == ["{}", '{"n": 1}']

    def refuse(definition: str) -> str:
        raise ValueError("refused")

    with pytest.raises(ValueError, match="refused"):  # a failed change leaves the stored one as it was
        store.update_experiment("b", refuse)
    assert store.experiments() == ["{}", '{"n": 1}']
    with pytest.raises(NotFound, match="'missing' does not exist"):
        store.update_experiment("missing", lambda d: d)
