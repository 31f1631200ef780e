"""Two replica caches (two directories, two KnowledgeBase objects) on one real PostgreSQL: writes
through either are searchable through the other within seconds, and caches that start cold, fall
behind or belong to another database are rebuilt from the stored embeddings."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from hybrid_assistant.retrieval import (
    Document,
    EmptyIndexError,
    HashingEmbedder,
    RetrievalSettings,
    SearchMode,
)
from hybrid_assistant.retrieval.errors import SharedStoreUnavailableError
from hybrid_assistant.retrieval.replica_sync import ReplicaKnowledgeBase
from hybrid_assistant.server.cli import app
from hybrid_assistant.testing.postgres import PostgresServer
from tests.storage.helpers import CountingEmbedder

SETTINGS = RetrievalSettings(chunk_size=64, chunk_overlap=0, sync_interval_s=0.25)
FERRY = "The ferry to the island leaves at noon from pier seven. Tickets are sold on board."
CATS = "Cats sleep most of the day. They hunt at dusk and dawn."
OWLS = "Owls fly silently at night. Their feathers muffle every wingbeat."


def replica(
    directory: Path, dsn: str, settings: RetrievalSettings = SETTINGS, **kw: object
) -> ReplicaKnowledgeBase:
    embedder = kw.pop("embedder", None) or HashingEmbedder()
    return ReplicaKnowledgeBase.open_replica(directory, embedder, dsn, settings, **kw)  # type: ignore[arg-type]


def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> float:
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout, "the change did not reach the other replica in time"
        time.sleep(0.02)
    return time.monotonic() - start


def top_document(kb: ReplicaKnowledgeBase, query: str, mode: SearchMode = "lexical") -> str | None:
    """Lexical by default: only a document sharing the query's words matches (a dense top hit
    always exists, so it cannot tell whether the document arrived)."""
    try:
        hits = kb.search(query, top_k=1, mode=mode)
    except EmptyIndexError:
        return None
    return hits[0].document_id if hits else None


@pytest.fixture
def pair(pg_dsn: str, tmp_path: Path) -> Iterator[tuple[ReplicaKnowledgeBase, ReplicaKnowledgeBase]]:
    a = replica(tmp_path / "a", pg_dsn)
    b = replica(tmp_path / "b", pg_dsn)
    yield a, b
    a.close()
    b.close()


def test_writes_through_one_replica_reach_the_other_within_seconds(
    pair: tuple[ReplicaKnowledgeBase, ReplicaKnowledgeBase],
) -> None:
    a, b = pair
    a.ingest([Document("ferry", FERRY), Document("cats", CATS)])
    assert top_document(a, "ferry pier noon") == "ferry"  # the writer sees its own write at once
    waited = wait_for(lambda: top_document(b, "ferry pier noon") == "ferry")
    assert waited < 3.0
    assert top_document(b, "ferry to the island pier noon", mode="dense") == "ferry"  # FAISS has it too
    # An update through B replaces the text on A; a delete through A removes it from B.
    b.ingest([Document("cats", OWLS)])
    wait_for(lambda: top_document(a, "owls feathers night") == "cats")
    assert [h.text for h in a.search("dusk dawn hunt", mode="lexical")] == []
    a.delete(["ferry"])
    wait_for(lambda: b.stats().documents == 1)
    assert [h.document_id for h in b.search("ferry pier", mode="lexical")] == []
    wait_for(lambda: a.fingerprint == b.fingerprint)
    assert (a.stats().documents, a.stats().chunks) == (b.stats().documents, b.stats().chunks)


def test_a_restarted_replica_replays_only_what_it_missed(pg_dsn: str, tmp_path: Path) -> None:
    with replica(tmp_path / "a", pg_dsn) as a:
        a.ingest([Document("ferry", FERRY)])
        with replica(tmp_path / "b", pg_dsn, follow=False) as b:
            missed_from = b.applied_seq
        a.ingest([Document("cats", CATS)])
        a.delete(["ferry"])
        embedder = CountingEmbedder()
        with replica(tmp_path / "b", pg_dsn, follow=False, embedder=embedder) as b:
            assert b.applied_seq == a.applied_seq == missed_from + 2
            assert embedder.texts == 0
            assert b.stats().documents == 1 and top_document(b, "cats dusk") == "cats"
            assert b.fingerprint == a.fingerprint


def test_a_replica_behind_the_kept_changes_rebuilds(pg_dsn: str, tmp_path: Path) -> None:
    short = RetrievalSettings(chunk_size=64, chunk_overlap=0, change_retention=2)
    a = replica(tmp_path / "a", pg_dsn, short, follow=False)
    b = replica(tmp_path / "b", pg_dsn, short, follow=False)
    try:
        a.ingest([Document("ferry", FERRY), Document("old", OWLS)])
        b.sync()
        for i in range(4):
            a.ingest([Document(f"cat{i}", f"{CATS} Cat number {i}.")])
        a.delete(["old"])
        with psycopg.connect(pg_dsn) as conn:  # b's next change is gone from the change table
            first_kept = conn.execute("SELECT min(seq) FROM knowledge_changes").fetchone()
        assert first_kept is not None and first_kept[0] > b.applied_seq + 1
        b.sync()
        assert b.applied_seq == a.applied_seq
        assert (b.stats().documents, b.stats().chunks) == (a.stats().documents, a.stats().chunks)
        assert [h.document_id for h in b.search("owls feathers", mode="lexical")] == []
        assert top_document(b, "ferry pier noon") == "ferry"
    finally:
        a.close()
        b.close()


def test_a_cache_of_another_database_is_discarded(postgres: PostgresServer, tmp_path: Path) -> None:
    first, second = postgres.create_database(), postgres.create_database()
    with replica(tmp_path / "a", first, follow=False) as a:
        a.ingest([Document("ferry", FERRY)])
    with replica(tmp_path / "b", second, follow=False) as other:
        other.ingest([Document("cats", CATS)])
    with replica(tmp_path / "a", second, follow=False) as a:  # a's cache pointed at the first database
        assert a.stats().documents == 1
        assert top_document(a, "ferry pier") is None
        assert top_document(a, "ferry pier", mode="dense") == "cats"  # FAISS holds only that one


def test_concurrent_writes_of_one_document_end_consistent(
    pair: tuple[ReplicaKnowledgeBase, ReplicaKnowledgeBase], pg_dsn: str
) -> None:
    a, b = pair
    errors: list[BaseException] = []

    def write(kb: ReplicaKnowledgeBase, name: str) -> None:
        try:
            for i in range(8):
                kb.ingest([Document("shared", f"{name} wrote version {i}. {FERRY}", {"writer": name})])
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(kb, name)) for kb, name in ((a, "alpha"), (b, "beta"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with psycopg.connect(pg_dsn) as conn:
        truth = conn.execute("SELECT c.id, c.text FROM knowledge_chunks c ORDER BY c.id").fetchall()
        last = conn.execute("SELECT document_id FROM knowledge_changes ORDER BY seq DESC LIMIT 1").fetchone()
    assert last == ("shared",)
    for kb in (a, b):
        wait_for(lambda kb=kb: kb.applied_seq == max(a.applied_seq, b.applied_seq))  # type: ignore[misc]
        hits = kb.search("wrote version", top_k=20, mode="lexical")
        assert sorted((int(h.chunk_id), h.text) for h in hits) == [
            (int(i), t) for i, t in truth if "wrote" in t
        ]
    assert a.fingerprint == b.fingerprint


def test_searches_go_on_while_the_database_is_down_and_following_resumes(
    pair: tuple[ReplicaKnowledgeBase, ReplicaKnowledgeBase], postgres: PostgresServer
) -> None:
    a, b = pair
    a.ingest([Document("ferry", FERRY)])
    wait_for(lambda: top_document(b, "ferry pier") == "ferry")
    postgres.stop()
    try:
        assert top_document(b, "ferry pier") == "ferry"  # served from the local cache
        with pytest.raises(SharedStoreUnavailableError, match=r"unavailable.*retry"):
            a.ingest([Document("owls", OWLS)])
    finally:
        postgres.start()
    # Back within seconds: the pool replaces the connections the restart broke.
    wait_for(lambda: ingested(a, Document("owls", OWLS)), timeout=10)
    wait_for(lambda: top_document(b, "owls feathers night") == "owls", timeout=10)


def ingested(kb: ReplicaKnowledgeBase, document: Document) -> bool:
    try:
        kb.ingest([document])
    except SharedStoreUnavailableError:
        return False
    return True


def test_offline_cli_ingest_and_delete_write_the_shared_store(
    pg_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "kb").mkdir()
    (tmp_path / "kb" / "ferry.md").write_text(FERRY)
    monkeypatch.setenv("HA_DATABASE_URL", pg_dsn)
    monkeypatch.setenv("HA_EMBEDDER", "hashing")
    with replica(tmp_path / "server-cache", pg_dsn) as server:
        result = CliRunner().invoke(
            app,
            ["ingest", str(tmp_path / "kb"), "--ids", "stem", "--local", "--data-dir", str(tmp_path / "d")],
        )
        assert result.exit_code == 0, result.output
        assert "added" in result.output
        wait_for(lambda: top_document(server, "ferry pier") == "ferry")
        result = CliRunner().invoke(
            app, ["knowledge", "delete", "ferry", "nope", "--local", "--data-dir", str(tmp_path / "d")]
        )
        assert result.exit_code == 0, result.output
        assert "deleted 1; not found: nope" in result.output
        wait_for(lambda: server.stats().documents == 0)
    assert not (tmp_path / "d" / "index").exists()  # no local index was written


def test_offline_cli_delete_without_a_database_edits_the_local_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "kb").mkdir()
    (tmp_path / "kb" / "ferry.md").write_text(FERRY)
    monkeypatch.delenv("HA_DATABASE_URL", raising=False)
    monkeypatch.setenv("HA_EMBEDDER", "hashing")
    data = ["--local", "--data-dir", str(tmp_path / "d")]
    runner = CliRunner()
    assert runner.invoke(app, ["ingest", str(tmp_path / "kb"), "--ids", "stem", *data]).exit_code == 0
    result = runner.invoke(app, ["knowledge", "delete", "ferry", *data])
    assert result.exit_code == 0, result.output
    assert "deleted 1" in result.output
    assert "deleted 0; not found: ferry" in runner.invoke(app, ["knowledge", "delete", "ferry", *data]).output
