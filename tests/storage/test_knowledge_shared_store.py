"""The shared knowledge store on a real PostgreSQL: schema, versions, writes, the change sequence,
and a replica cache rebuilt from stored embeddings without calling the embedder."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from hybrid_assistant.retrieval import Document, HashingEmbedder, RetrievalSettings, replica_sync
from hybrid_assistant.retrieval.chunker import Chunker
from hybrid_assistant.retrieval.errors import (
    IncompatibleIndexError,
    SharedSchemaError,
    SharedStoreUnavailableError,
)
from hybrid_assistant.retrieval.replica_sync import ReplicaKnowledgeBase
from hybrid_assistant.retrieval.shared_ingest import delete_shared, ingest_shared
from hybrid_assistant.retrieval.shared_schema import SCHEMA_VERSION
from hybrid_assistant.retrieval.shared_store import SharedStore
from hybrid_assistant.testing.postgres import PostgresServer
from tests.storage.helpers import CountingEmbedder

SETTINGS = RetrievalSettings(chunk_size=64, chunk_overlap=0)
FERRY = "The ferry to the island leaves at noon from pier seven. Tickets are sold on board."
CATS = "Cats sleep most of the day. They hunt at dusk and dawn."


def ingest(store: SharedStore, *documents: Document, embedder: HashingEmbedder | None = None) -> int:
    chunker = Chunker(SETTINGS.chunk_size, SETTINGS.chunk_overlap)
    _, write = ingest_shared(store, embedder or HashingEmbedder(), chunker, documents, batch_size=8)
    return write.seq


def rows(dsn: str, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql).fetchall()


@pytest.fixture
def store(pg_dsn: str) -> Iterator[SharedStore]:
    opened = SharedStore.open(pg_dsn)
    yield opened
    opened.close()


def test_schema_is_created_once_by_replicas_starting_together(pg_dsn: str) -> None:
    stores: list[SharedStore] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            stores.append(SharedStore.open(pg_dsn))
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        assert len({s.kb_id for s in stores}) == 1
        assert rows(pg_dsn, "SELECT version FROM schema_version WHERE component = 'knowledge'") == [
            (SCHEMA_VERSION,)
        ]
    finally:
        for s in stores:
            s.close()


def test_a_newer_schema_version_is_refused_with_a_clear_message(pg_dsn: str) -> None:
    SharedStore.open(pg_dsn).close()
    with psycopg.connect(pg_dsn) as conn:
        conn.execute(
            "UPDATE schema_version SET version = %s WHERE component = 'knowledge'", (SCHEMA_VERSION + 1,)
        )
    with pytest.raises(SharedSchemaError, match=rf"knowledge schema is at version {SCHEMA_VERSION + 1}"):
        SharedStore.open(pg_dsn)


def test_an_unreachable_database_is_reported_without_the_password(postgres: PostgresServer) -> None:
    dsn = f"postgresql://postgres:secret-pw@127.0.0.1:{postgres.port}/no_such_database?connect_timeout=2"
    with pytest.raises(SharedStoreUnavailableError, match="no_such_database") as info:
        SharedStore.open(dsn)
    assert "secret-pw" not in str(info.value)


def test_ingest_and_delete_write_documents_chunks_embeddings_and_changes(
    store: SharedStore, pg_dsn: str
) -> None:
    seq = ingest(store, Document("ferry", FERRY, {"topic": "travel"}), Document("cats", CATS))
    docs = rows(pg_dsn, "SELECT id, metadata, chunk_count, seq FROM knowledge_documents ORDER BY id")
    assert [(d[0], d[1]) for d in docs] == [("cats", "{}"), ("ferry", '{"topic":"travel"}')]
    assert all(int(d[2]) >= 1 for d in docs) and max(int(d[3]) for d in docs) == seq
    chunks = rows(pg_dsn, "SELECT document_id, text, octet_length(embedding) FROM knowledge_chunks")
    assert sum(int(d[2]) for d in docs) == len(chunks)
    assert {c[2] for c in chunks} == {HashingEmbedder().dimension * 4}
    assert rows(pg_dsn, "SELECT seq, document_id, kind FROM knowledge_changes ORDER BY seq") == [
        (seq - 1, "ferry", "upsert"),
        (seq, "cats", "upsert"),
    ]
    # Unchanged: nothing written, no change row.
    assert ingest(store, Document("cats", CATS)) == 0
    summary, write = delete_shared(store, ["cats", "nope"])
    assert (summary.deleted, summary.not_found) == (1, ("nope",))
    assert write.seq == seq + 1
    assert rows(pg_dsn, "SELECT count(*) FROM knowledge_chunks WHERE document_id = 'cats'") == [(0,)]
    assert rows(pg_dsn, f"SELECT kind FROM knowledge_changes WHERE seq = {write.seq}") == [("delete",)]


def test_a_metadata_only_update_keeps_the_stored_chunks_and_embeds_nothing(
    store: SharedStore, pg_dsn: str
) -> None:
    ingest(store, Document("ferry", FERRY))
    before = rows(pg_dsn, "SELECT id FROM knowledge_chunks ORDER BY id")
    embedder = CountingEmbedder()
    seq = ingest(store, Document("ferry", FERRY, {"lang": "en"}), embedder=embedder)
    assert embedder.texts == 0 and seq > 0
    assert rows(pg_dsn, "SELECT id FROM knowledge_chunks ORDER BY id") == before
    assert rows(pg_dsn, "SELECT metadata FROM knowledge_documents") == [('{"lang":"en"}',)]


def test_another_embedder_is_refused_once_chunks_exist(store: SharedStore) -> None:
    ingest(store, Document("ferry", FERRY))
    with pytest.raises(IncompatibleIndexError, match="hashing-256"):
        store.check_embedder("other-model", 384)


def test_change_rows_past_the_retention_are_pruned(pg_dsn: str) -> None:
    store = SharedStore.open(pg_dsn, change_retention=2)
    try:
        for i in range(5):
            ingest(store, Document(f"d{i}", f"{CATS} number {i}"))
        assert rows(pg_dsn, "SELECT seq FROM knowledge_changes ORDER BY seq") == [(4,), (5,)]
        assert rows(pg_dsn, "SELECT value FROM knowledge_meta WHERE key = 'pruned_through'") == [("3",)]
    finally:
        store.close()


def test_a_cold_replica_rebuilds_from_stored_embeddings_without_embedding(
    store: SharedStore, pg_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = [Document(f"doc{i}", f"{FERRY} Variant {i}.", {"n": str(i)}) for i in range(30)]
    ingest(store, *docs, Document("cats", CATS))
    monkeypatch.setattr(replica_sync, "_FULL_SYNC_PAGE", 7)  # several pages, as with a big store
    embedder = CountingEmbedder()
    with ReplicaKnowledgeBase.open_replica(
        tmp_path / "cache", embedder, pg_dsn, SETTINGS, follow=False
    ) as kb:
        assert embedder.texts == 0  # the cache was filled from the stored embeddings
        stats = kb.stats()
        stored_chunks = rows(pg_dsn, "SELECT count(*) FROM knowledge_chunks")[0][0]
        assert (stats.documents, stats.chunks) == (31, stored_chunks)
        hits = kb.search("cats hunt at dusk", top_k=1, mode="dense")
        assert embedder.texts == 1  # only the query
        assert hits[0].document_id == "cats"
        # Chunk ids are the shared store's, so a citation means the same chunk on every replica.
        assert rows(pg_dsn, f"SELECT text FROM knowledge_chunks WHERE id = {hits[0].chunk_id}") == [
            (hits[0].text,)
        ]


def test_documents_postgresql_cannot_store_fail_alone(store: SharedStore, pg_dsn: str) -> None:
    chunker = Chunker(SETTINGS.chunk_size, SETTINGS.chunk_overlap)
    hostile = [
        Document("nul-text", "before\x00after"),
        Document("nul-meta", CATS, {"k": "v\x00"}),
        Document("nul\x00id", CATS),
        Document("surrogate\ud800", CATS),
        Document("x" * 5000, CATS),
        Document("", CATS),
        Document("good", FERRY),
    ]
    summary, write = ingest_shared(store, HashingEmbedder(), chunker, hostile, batch_size=8)
    assert (summary.received, summary.added, len(summary.errors)) == (7, 1, 6)
    assert sum("NUL character" in e for e in summary.errors) == 3
    assert write.seq > 0
    assert rows(pg_dsn, "SELECT id FROM knowledge_documents") == [("good",)]
    deleted, _ = delete_shared(store, ["nul\x00id", "surrogate\ud800", "good", "good"])
    assert (deleted.deleted, deleted.not_found) == (1, ("nul\x00id", "surrogate\ud800"))
