"""The shared PostgreSQL store: source of truth for documents, chunks and their embeddings when
many replicas serve one knowledge base (tables in :mod:`shared_schema`).

Writes are serialised by a transaction-level advisory lock taken before the change sequence
advances, so sequence order is commit order: a replica that has read change ``n`` has seen every
change below it, and can follow the sequence with a plain ``seq > last`` query (with concurrent
writers, a ``bigserial`` alone can commit 11 before 10 and a follower would skip 10 forever).
The lock is held only for the SQL of one ingest or delete; embedding happens before it.

Reads for a replica (:class:`Snapshot`) run in one REPEATABLE READ, READ ONLY transaction, so
the change rows, documents, chunks and embeddings it reads belong to one committed state.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass

import numpy as np
import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from hybrid_assistant.pg_schema import redact
from hybrid_assistant.retrieval.docstore import DocumentState, metadata_json
from hybrid_assistant.retrieval.errors import (
    CorruptIndexError,
    IncompatibleIndexError,
    SharedStoreUnavailableError,
)
from hybrid_assistant.retrieval.ingest import IngestPlan
from hybrid_assistant.retrieval.shared_schema import WRITE_LOCK, ensure_schema

logger = logging.getLogger(__name__)

_BATCH = 5000  # ids per ``= ANY(%s)`` query
_CONNECT_TIMEOUT_S = 10.0
# How long a write waits for a pooled connection while the database is unreachable.
_POOL_TIMEOUT_S = 5.0
_RECONNECT_GIVE_UP_S = 3.0
# Change rows kept for replicas that are behind; one further behind rebuilds from the stored state.
DEFAULT_CHANGE_RETENTION = 100_000
# NOTIFY channel: PostgreSQL delivers it when the writing transaction commits.
CHANNEL = "knowledge_changes"


@dataclass(frozen=True)
class RemoteChunk:
    id: int
    ordinal: int
    text: str
    start: int
    end: int


@dataclass(frozen=True)
class RemoteDocument:
    """A document as the shared store holds it (chunks without their embeddings)."""

    id: str
    source: str
    metadata_json: str
    content_hash: str
    chunks: tuple[RemoteChunk, ...]


@dataclass(frozen=True)
class WriteCounts:
    added: int = 0
    updated: int = 0
    chunks_added: int = 0
    chunks_removed: int = 0
    seq: int = 0


class WriteConflict(Exception):
    """Another writer changed a document's text between planning and writing a metadata-only update."""


class SharedStore:
    """A connection pool on the shared database and the knowledge store's reads and writes."""

    def __init__(self, dsn: str, change_retention: int = DEFAULT_CHANGE_RETENTION) -> None:
        # Use ``SharedStore.open``.
        self.where = redact(dsn)
        self._dsn = dsn  # holds the password: never logged (``where`` is the printable form)
        self.change_retention = change_retention
        self._pool = ConnectionPool(
            dsn,
            min_size=1,
            max_size=4,
            kwargs={"autocommit": True},
            # A connection broken by a server restart is replaced when taken, not used.
            check=ConnectionPool.check_connection,
            timeout=_POOL_TIMEOUT_S,
            # The pool retries a failed connection with doubling delays; giving up early (and
            # starting afresh on the next request) keeps the wait after an outage to seconds.
            reconnect_timeout=_RECONNECT_GIVE_UP_S,
            name="knowledge",
            open=False,
        )
        self.kb_id = ""

    @classmethod
    def open(cls, dsn: str, change_retention: int = DEFAULT_CHANGE_RETENTION) -> SharedStore:
        """Connect and create or migrate the schema. Raises ``SharedStoreUnavailableError`` when the
        database cannot be reached, ``SharedSchemaError`` when its schema is newer than this code."""
        store = cls(dsn, change_retention)
        # One direct connection first: an unreachable or misnamed database fails at once with
        # the server's own reason, not after the pool's timeout with a generic one.
        try:
            with psycopg.connect(dsn, autocommit=True, connect_timeout=int(_CONNECT_TIMEOUT_S)) as conn:
                store.kb_id = ensure_schema(conn)
        except psycopg.OperationalError as exc:
            raise SharedStoreUnavailableError(
                f"cannot open the shared knowledge store {store.where}: {exc}".strip()
            ) from exc
        store._pool.open()
        return store

    def close(self) -> None:
        self._pool.close()

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection]:
        try:
            with self._pool.connection() as conn:
                yield conn
        except (PoolTimeout, psycopg.OperationalError) as exc:
            raise SharedStoreUnavailableError(
                f"the shared knowledge store {self.where} is unavailable ({exc}); retry later "
                "(ingest and delete are idempotent)"
            ) from exc

    # ------------------------------------------------------------------ identity

    def check_embedder(self, name: str, dimension: int) -> None:
        """Refuse an embedder other than the one the stored chunks were embedded with."""
        with self._connection() as conn:
            self._check_embedder(conn, name, dimension, claim=False)

    def _check_embedder(self, conn: psycopg.Connection, name: str, dimension: int, claim: bool) -> None:
        rows: dict[str, str] = dict(
            conn.execute(
                "SELECT key, value FROM knowledge_meta WHERE key IN ('embedder', 'dimension')"
            ).fetchall()
        )
        stored = (rows.get("embedder"), rows.get("dimension"))
        if stored != (None, None) and stored != (name, str(dimension)):
            has_chunks = conn.execute("SELECT EXISTS (SELECT 1 FROM knowledge_chunks)").fetchone()
            if has_chunks is not None and has_chunks[0]:
                raise IncompatibleIndexError(
                    f"the shared knowledge store {self.where} was built with embedder {stored[0]!r} "
                    f"(dimension {stored[1]}), not {name!r} (dimension {dimension}); configure that "
                    "embedder on every replica, or use another database"
                )
        if claim and stored != (name, str(dimension)):
            conn.execute(
                """INSERT INTO knowledge_meta VALUES ('embedder', %s), ('dimension', %s)
                   ON CONFLICT (key) DO UPDATE SET value = excluded.value""",
                (name, str(dimension)),
            )

    # ------------------------------------------------------------------ planning

    def document_states(self, ids: Sequence[str]) -> dict[str, DocumentState]:
        with self._connection() as conn:
            return _states(conn, ids)

    # ------------------------------------------------------------------ writes

    def write_ingest(
        self, plan: IngestPlan, vectors: np.ndarray, embedder: str, dimension: int
    ) -> WriteCounts:
        """Apply a plan in one transaction (documents, chunks, embeddings, change rows).

        Raises :class:`WriteConflict` when a metadata-only update finds that another writer
        changed the document's text since the plan was made (the caller plans again).
        """
        ids = [change.document.id for change in plan.changes]
        rechunked = [change.document.id for change in plan.changes if change.rechunk]
        # Set-wise statements (one round trip each, not one per document): a big ingest holds the
        # write lock, and so every other writer, for as short a time as possible.
        with self._connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            self._check_embedder(conn, embedder, dimension, claim=True)
            states = _states(conn, ids)
            for change in plan.changes:
                state = states.get(change.document.id)
                if not change.rechunk and (state is None or state.content_hash != change.content_hash):
                    raise WriteConflict(change.document.id)
            seqs = {
                str(r[1]): int(r[0])
                for r in conn.execute(
                    """INSERT INTO knowledge_changes (document_id, kind)
                       SELECT id, 'upsert' FROM unnest(%s::text[]) WITH ORDINALITY AS t(id, n) ORDER BY n
                       RETURNING seq, document_id""",
                    (ids,),
                )
            }
            chunks_removed = conn.execute(
                "DELETE FROM knowledge_chunks WHERE document_id = ANY(%s)", (rechunked,)
            ).rowcount
            with conn.cursor() as cur:
                cur.executemany(
                    """INSERT INTO knowledge_documents
                           (id, source, metadata, content_hash, chunk_count, seq, updated_at)
                       VALUES (%s, %s, %s, %s, %s, %s, now())
                       ON CONFLICT (id) DO UPDATE SET source = excluded.source,
                           metadata = excluded.metadata, content_hash = excluded.content_hash,
                           chunk_count = excluded.chunk_count, seq = excluded.seq,
                           updated_at = excluded.updated_at""",
                    [
                        (
                            change.document.id,
                            change.document.source,
                            metadata_json(change.document.metadata),
                            change.content_hash,
                            len(change.chunks) if change.rechunk else states[change.document.id].chunk_count,
                            seqs[change.document.id],
                        )
                        for change in plan.changes
                    ],
                )
                with cur.copy(
                    "COPY knowledge_chunks (document_id, ordinal, text, start_offset, end_offset, embedding) "
                    "FROM STDIN"
                ) as copy:
                    rows = ((change.document.id, chunk) for change in plan.changes for chunk in change.chunks)
                    for (doc_id, chunk), vector in zip(rows, vectors, strict=True):
                        copy.write_row(
                            (doc_id, chunk.ordinal, chunk.text, chunk.start, chunk.end, _blob(vector))
                        )
            seq = max(seqs.values())
            self._finish_write(conn, seq)
        added = sum(doc_id not in states for doc_id in ids)
        return WriteCounts(added, len(ids) - added, len(vectors), max(chunks_removed, 0), seq)

    def delete(self, ids: Sequence[str]) -> tuple[int, list[str], int]:
        """Delete documents (their chunks cascade); returns (deleted, not found, last seq)."""
        wanted = list(dict.fromkeys(ids))
        with self._connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            gone = {
                str(r[0])
                for r in conn.execute(
                    "DELETE FROM knowledge_documents WHERE id = ANY(%s) RETURNING id", (wanted,)
                )
            }
            seq = 0
            if gone:
                row = conn.execute(
                    """INSERT INTO knowledge_changes (document_id, kind)
                       SELECT id, 'delete' FROM unnest(%s::text[]) AS t(id) RETURNING seq""",
                    (sorted(gone),),
                ).fetchall()
                seq = max(int(r[0]) for r in row)
                self._finish_write(conn, seq)
        return len(gone), [doc_id for doc_id in wanted if doc_id not in gone], seq

    def _finish_write(self, conn: psycopg.Connection, seq: int) -> None:
        """Prune change rows past the retention, and wake listening replicas at commit."""
        cut = seq - self.change_retention
        if cut > 0 and conn.execute("DELETE FROM knowledge_changes WHERE seq <= %s", (cut,)).rowcount > 0:
            conn.execute("UPDATE knowledge_meta SET value = %s WHERE key = 'pruned_through'", (str(cut),))
        conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(seq)))

    # ------------------------------------------------------------------ replica reads

    def listen(self) -> psycopg.Connection:
        """A connection of its own that receives a notification at each committed write."""
        conn = psycopg.connect(self._dsn, autocommit=True, connect_timeout=int(_CONNECT_TIMEOUT_S))
        try:
            conn.execute(f"LISTEN {CHANNEL}")
        except BaseException:
            conn.close()
            raise
        return conn

    @contextmanager
    def snapshot(self) -> Iterator[Snapshot]:
        """One consistent read-only view of the store."""
        with self._connection() as conn:
            # Begun by hand: the pooled connections are autocommit and keep their default level.
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            try:
                yield Snapshot(conn, self.where)
            finally:
                with suppress(psycopg.Error):  # a broken connection is dropped by the pool
                    conn.execute("ROLLBACK")


class Snapshot:
    """Reads inside one REPEATABLE READ transaction (see :meth:`SharedStore.snapshot`)."""

    def __init__(self, conn: psycopg.Connection, where: str) -> None:
        self._conn = conn
        self._where = where
        meta: dict[str, str] = dict(conn.execute("SELECT key, value FROM knowledge_meta").fetchall())
        self.kb_id = str(meta.get("kb_id", ""))
        self.pruned_through = int(meta.get("pruned_through", 0))
        row = conn.execute("SELECT COALESCE(max(seq), 0) FROM knowledge_changes").fetchone()
        # An empty change table after pruning still stands at the pruned sequence.
        self.head = max(int(row[0]) if row else 0, self.pruned_through)

    def changed_documents(self, after: int, limit: int) -> tuple[int, list[str]]:
        """Documents changed after sequence ``after`` (at most ``limit`` change rows), and the
        sequence read through."""
        rows = self._conn.execute(
            "SELECT seq, document_id FROM knowledge_changes WHERE seq > %s ORDER BY seq LIMIT %s",
            (after, limit),
        ).fetchall()
        if not rows:
            return after, []
        return int(rows[-1][0]), list(dict.fromkeys(str(r[1]) for r in rows))

    def document_ids(self) -> list[str]:
        return [str(r[0]) for r in self._conn.execute("SELECT id FROM knowledge_documents")]

    def documents(self, ids: Sequence[str]) -> dict[str, RemoteDocument]:
        """The stored documents with these ids; absent ids are missing from the result."""
        params = [list(ids)]
        docs = self._conn.execute(
            "SELECT id, source, metadata, content_hash FROM knowledge_documents WHERE id = ANY(%s)", params
        ).fetchall()
        chunks: dict[str, list[RemoteChunk]] = {}
        for r in self._conn.execute(
            "SELECT id, document_id, ordinal, text, start_offset, end_offset FROM knowledge_chunks "
            "WHERE document_id = ANY(%s) ORDER BY document_id, ordinal",
            params,
        ):
            chunks.setdefault(r[1], []).append(RemoteChunk(int(r[0]), int(r[2]), r[3], int(r[4]), int(r[5])))
        return {
            str(d[0]): RemoteDocument(str(d[0]), d[1], d[2], d[3], tuple(chunks.get(d[0], ()))) for d in docs
        }

    def embeddings(self, ids: Sequence[int], dimension: int) -> np.ndarray:
        """Stored embeddings of ``ids``, in that order."""
        out = np.zeros((len(ids), dimension), dtype=np.float32)
        position = {int(chunk_id): row for row, chunk_id in enumerate(ids)}
        for start in range(0, len(ids), _BATCH):
            part = [int(i) for i in ids[start : start + _BATCH]]
            for chunk_id, blob in self._conn.execute(
                "SELECT id, embedding FROM knowledge_chunks WHERE id = ANY(%s)", (part,)
            ):
                if len(blob) != dimension * 4:
                    raise CorruptIndexError(
                        f"chunk {chunk_id} in the shared knowledge store {self._where} has a "
                        f"{len(blob)}-byte embedding; expected dimension {dimension} ({dimension * 4} bytes)"
                    )
                out[position[int(chunk_id)]] = np.frombuffer(blob, dtype="<f4")
        return out


def _states(conn: psycopg.Connection, ids: Sequence[str]) -> dict[str, DocumentState]:
    states: dict[str, DocumentState] = {}
    for start in range(0, len(ids), _BATCH):
        for r in conn.execute(
            "SELECT id, content_hash, metadata, source, chunk_count FROM knowledge_documents "
            "WHERE id = ANY(%s)",
            (list(ids[start : start + _BATCH]),),
        ):
            states[str(r[0])] = DocumentState(r[1], r[2], r[3], int(r[4]))
    return states


def _blob(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


class StateLookup:
    """``DocumentStates`` over states fetched up front (one query for a whole ingest call)."""

    def __init__(self, states: Mapping[str, DocumentState]) -> None:
        self._states = states

    def document_state(self, document_id: str) -> DocumentState | None:
        return self._states.get(document_id)
