"""SQLite docstore: the source of truth for documents, chunks, their embeddings and FTS5 index.

One writer connection, used by one thread at a time (the knowledge base serialises writers),
runs explicit transactions; readers borrow read-only connections from a pool. WAL mode lets
readers see the last committed state while a write transaction is open.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hybrid_assistant.retrieval.chunker import Chunk
from hybrid_assistant.retrieval.errors import CorruptIndexError
from hybrid_assistant.retrieval.lexical import FTS_SCHEMA
from hybrid_assistant.retrieval.lexical_index import LexicalIndex

logger = logging.getLogger(__name__)

SCHEMA_VERSION = "1"

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS documents (
    id TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    metadata TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    chunk_count INTEGER NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS document_metadata (
    document_id TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (document_id, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS document_metadata_by_value ON document_metadata(key, value);
-- AUTOINCREMENT: a chunk id is never reused, so a cited chunk id never points at other text.
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    document_id TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    ordinal INTEGER NOT NULL,
    text TEXT NOT NULL,
    start_offset INTEGER NOT NULL,
    end_offset INTEGER NOT NULL,
    embedding BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_by_document ON chunks(document_id, ordinal);
{FTS_SCHEMA}
"""


@dataclass(frozen=True)
class DocumentState:
    """What the docstore knows about a document, to decide whether re-ingesting changes it."""

    content_hash: str
    metadata_json: str
    source: str
    chunk_count: int


@dataclass(frozen=True)
class ChunkRow:
    id: int
    document_id: str
    text: str
    start: int
    end: int
    metadata: Mapping[str, str]
    source: str


def metadata_json(metadata: Mapping[str, str]) -> str:
    """Canonical JSON (sorted keys) so equal metadata compares equal as text."""
    return json.dumps(dict(metadata), sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _vector_blob(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


class Docstore:
    """Owns ``docstore.sqlite3`` in the knowledge-base directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._idle_readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        try:
            self._writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._writer.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed ingest survives power loss, not only a process crash; one fsync
            # per ingest call is cheap next to embedding.
            self._writer.execute("PRAGMA synchronous=FULL")
            self._writer.execute("PRAGMA foreign_keys=ON")
            self._writer.execute("PRAGMA busy_timeout=10000")
            self._writer.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise CorruptIndexError(f"cannot open docstore {str(path)!r}: {exc}") from exc
        version = self.get_meta("schema_version")
        if version is None:
            self._writer.execute("INSERT INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
        elif version != SCHEMA_VERSION:
            raise CorruptIndexError(
                f"docstore {str(path)!r} has schema version {version!r}, this code reads {SCHEMA_VERSION!r}"
            )
        # Lexical queries are answered from memory (lexical_index); FTS5 stays the stored truth.
        # Chunk changes of the open write transaction wait here until it commits.
        self.lexical = LexicalIndex()
        self._lexical_pending: list[tuple[str, list[Any]]] = []
        self._load_lexical()

    def _load_lexical(self, batch: int = 20_000) -> None:
        last = 0
        while True:
            rows = self._writer.execute(
                "SELECT id, text FROM chunks WHERE id > ? ORDER BY id LIMIT ?", (last, batch)
            ).fetchall()
            if not rows:
                return
            self.lexical.add((int(r[0]), str(r[1])) for r in rows)
            last = int(rows[-1][0])

    # ------------------------------------------------------------------ connections

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """A read-only connection inside one read transaction (one consistent snapshot).

        Connections are pooled rather than kept per thread, so a server that starts threads
        freely never accumulates them; the pool grows to the peak number of concurrent reads.
        """
        with self._readers_lock:
            conn = self._idle_readers.pop() if self._idle_readers else None
        if conn is None:
            conn = sqlite3.connect(
                f"file:{self.path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA busy_timeout=10000")
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            if conn.in_transaction:
                conn.execute("COMMIT")
            with self._readers_lock:
                self._idle_readers.append(conn)

    def close(self) -> None:
        """Close every connection; call only when no read is in progress."""
        with self._readers_lock:
            for conn in self._idle_readers:
                conn.close()
            self._idle_readers.clear()
        self._writer.close()

    # ------------------------------------------------------------------ meta

    def get_meta(self, key: str, conn: sqlite3.Connection | None = None) -> str | None:
        row = (conn or self._writer).execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self._writer.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def generation(self, conn: sqlite3.Connection | None = None) -> int:
        return int(self.get_meta("generation", conn) or 0)

    # ------------------------------------------------------------------ write transaction

    def begin(self) -> None:
        # IMMEDIATE takes the write lock now, so reads made while planning stay valid until commit.
        self._writer.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self._writer.execute("COMMIT")
        pending, self._lexical_pending = self._lexical_pending, []
        for kind, items in pending:
            if kind == "add":
                self.lexical.add(items)
            else:
                self.lexical.remove(items)

    def rollback(self) -> None:
        self._lexical_pending = []
        if self._writer.in_transaction:
            self._writer.execute("ROLLBACK")

    def bump_generation(self) -> int:
        generation = self.generation() + 1
        self.set_meta("generation", str(generation))
        return generation

    def document_state(self, document_id: str) -> DocumentState | None:
        row = self._writer.execute(
            "SELECT content_hash, metadata, source, chunk_count FROM documents WHERE id = ?", (document_id,)
        ).fetchone()
        return None if row is None else DocumentState(row[0], row[1], row[2], int(row[3]))

    def delete_chunks(self, document_id: str) -> list[int]:
        """Delete a document's chunks; returns their ids."""
        rows = self._writer.execute("DELETE FROM chunks WHERE document_id = ? RETURNING id", (document_id,))
        removed = [int(r[0]) for r in rows]
        self._lexical_pending.append(("remove", removed))
        return removed

    def delete_document(self, document_id: str) -> list[int]:
        """Delete a document, its metadata and chunks; returns the removed chunk ids."""
        removed = self.delete_chunks(document_id)
        self._writer.execute("DELETE FROM document_metadata WHERE document_id = ?", (document_id,))
        self._writer.execute("DELETE FROM documents WHERE id = ?", (document_id,))
        return removed

    def put_document(
        self,
        document_id: str,
        *,
        source: str,
        metadata: Mapping[str, str],
        content_hash: str,
        chunk_count: int,
    ) -> None:
        """Insert or replace a document row and its metadata (chunks are handled separately)."""
        now = time.time()
        self._writer.execute(
            """INSERT INTO documents VALUES (?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT(id) DO UPDATE SET source = excluded.source, metadata = excluded.metadata,
                   content_hash = excluded.content_hash, chunk_count = excluded.chunk_count,
                   updated_at = excluded.updated_at""",
            (document_id, source, metadata_json(metadata), content_hash, chunk_count, now, now),
        )
        self._writer.execute("DELETE FROM document_metadata WHERE document_id = ?", (document_id,))
        self._writer.executemany(
            "INSERT INTO document_metadata VALUES (?, ?, ?)",
            [(document_id, key, value) for key, value in metadata.items()],
        )

    def next_chunk_id(self) -> int:
        row = self._writer.execute("SELECT seq FROM sqlite_sequence WHERE name = 'chunks'").fetchone()
        return 1 if row is None else int(row[0]) + 1

    def insert_chunks(
        self, document_id: str, chunks: Sequence[Chunk], vectors: np.ndarray, first_id: int
    ) -> list[int]:
        """Insert chunks with ids ``first_id, first_id + 1, ...`` (the caller reserves them)."""
        ids = list(range(first_id, first_id + len(chunks)))
        self.insert_chunks_with_ids(document_id, ids, chunks, vectors)
        return ids

    def insert_chunks_with_ids(
        self, document_id: str, ids: Sequence[int], chunks: Sequence[Chunk], vectors: np.ndarray
    ) -> None:
        """Insert chunks under ids chosen elsewhere (a replica cache keeps the shared store's ids)."""
        self._writer.executemany(
            "INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (chunk_id, document_id, c.ordinal, c.text, c.start, c.end, _vector_blob(v))
                for chunk_id, c, v in zip(ids, chunks, vectors, strict=True)
            ],
        )
        self._lexical_pending.append(("add", [(int(i), c.text) for i, c in zip(ids, chunks, strict=True)]))

    def chunk_ids_of(self, document_id: str) -> list[int]:
        rows = self._writer.execute("SELECT id FROM chunks WHERE document_id = ?", (document_id,))
        return [int(r[0]) for r in rows]

    def delete_chunk_ids(self, ids: Sequence[int]) -> None:
        self._writer.executemany("DELETE FROM chunks WHERE id = ?", [(int(i),) for i in ids])
        self._lexical_pending.append(("remove", [int(i) for i in ids]))

    def document_ids(self) -> list[str]:
        return [str(r[0]) for r in self._writer.execute("SELECT id FROM documents")]

    # ------------------------------------------------------------------ reads

    def counts(self, conn: sqlite3.Connection | None = None) -> tuple[int, int]:
        """``(documents, chunks)``."""
        c = conn or self._writer
        documents = int(c.execute("SELECT COUNT(*) FROM documents").fetchone()[0])
        chunks = int(c.execute("SELECT COUNT(*) FROM chunks").fetchone()[0])
        return documents, chunks

    def fetch_chunks(self, conn: sqlite3.Connection, ids: Sequence[int]) -> dict[int, ChunkRow]:
        rows: dict[int, ChunkRow] = {}
        for start in range(0, len(ids), 500):  # stay far below SQLite's bound-parameter limit
            part = list(ids[start : start + 500])
            marks = ",".join("?" * len(part))
            for r in conn.execute(
                f"""SELECT c.id, c.document_id, c.text, c.start_offset, c.end_offset, d.metadata, d.source
                    FROM chunks c JOIN documents d ON d.id = c.document_id WHERE c.id IN ({marks})""",
                part,
            ):
                rows[int(r[0])] = ChunkRow(
                    int(r[0]), r[1], r[2], int(r[3]), int(r[4]), json.loads(r[5]), r[6]
                )
        return rows

    @staticmethod
    def filter_subquery(metadata_filter: Mapping[str, str]) -> tuple[str, list[str]]:
        """``(sql, params)`` selecting the ids of chunks whose document metadata has every
        ``key == value`` of the filter."""
        clauses = " INTERSECT ".join(
            "SELECT document_id FROM document_metadata WHERE key = ? AND value = ?" for _ in metadata_filter
        )
        params = [item for pair in metadata_filter.items() for item in pair]
        return f"SELECT id FROM chunks WHERE document_id IN ({clauses})", params

    def chunk_ids_matching(self, conn: sqlite3.Connection, metadata_filter: Mapping[str, str]) -> np.ndarray:
        sql, params = self.filter_subquery(metadata_filter)
        rows = conn.execute(sql + " ORDER BY id", params).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def embeddings(self, conn: sqlite3.Connection, ids: np.ndarray, dimension: int) -> np.ndarray:
        """Stored embeddings of ``ids``, in that order."""
        out = np.zeros((len(ids), dimension), dtype=np.float32)
        position = {int(chunk_id): row for row, chunk_id in enumerate(ids)}
        for start in range(0, len(ids), 500):
            part = [int(i) for i in ids[start : start + 500]]
            marks = ",".join("?" * len(part))
            for chunk_id, blob in conn.execute(
                f"SELECT id, embedding FROM chunks WHERE id IN ({marks})", part
            ):
                out[position[int(chunk_id)]] = np.frombuffer(blob, dtype="<f4")
        return out

    def all_chunk_ids(self, conn: sqlite3.Connection | None = None) -> np.ndarray:
        rows = (conn or self._writer).execute("SELECT id FROM chunks ORDER BY id").fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def iter_embeddings(
        self, dimension: int, batch: int = 20_000, conn: sqlite3.Connection | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """All ``(ids, vectors)`` in id order, in batches (the writer's view by default)."""
        c = conn or self._writer
        last = 0
        while True:
            rows = c.execute(
                "SELECT id, embedding FROM chunks WHERE id > ? ORDER BY id LIMIT ?", (last, batch)
            ).fetchall()
            if not rows:
                return
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), dimension)
            yield ids, vectors.astype(np.float32, copy=True)
            last = int(ids[-1])

    def bytes_on_disk(self) -> int:
        total = 0
        for suffix in ("", "-wal", "-shm"):
            candidate = self.path.with_name(self.path.name + suffix)
            if candidate.exists():
                total += candidate.stat().st_size
        return total
