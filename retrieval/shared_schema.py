"""The knowledge tables in the shared PostgreSQL database, and their versioned migrations.

Every replica runs :func:`ensure_schema` when it opens the shared store. Two replicas may start at
the same moment, so the check and the migrations run in one transaction under a transaction-level
advisory lock: the second waits, then finds the schema current. DDL is transactional in
PostgreSQL, so a migration that fails leaves the previous version intact. A database migrated by
newer code (a version this code does not know) is refused rather than guessed at.

Tables (all prefixed ``knowledge_``, so they sit beside the other shared state):

* ``knowledge_meta`` — key/value: ``schema_version``, ``kb_id`` (identity of this shared store;
  a replica cache built from another database is rebuilt), ``embedder``/``dimension``,
  ``pruned_through`` (highest change sequence pruned).
* ``knowledge_documents`` — one row per document; ``seq`` is the change that last wrote it.
* ``knowledge_chunks`` — chunk text, offsets and the embedding (little-endian float32 ``bytea``);
  ids come from a sequence and are never reused, and every replica cache keeps them.
* ``knowledge_changes`` — the change sequence (``bigserial``): one row per document upserted
  or deleted; replicas follow it.
"""

from __future__ import annotations

import logging
import uuid

import psycopg

from hybrid_assistant.retrieval.errors import SharedSchemaError

logger = logging.getLogger(__name__)

# Advisory-lock keys (any bigint unique to this use): schema migrations, and knowledge writes.
SCHEMA_LOCK = 0x68616B6E0001
WRITE_LOCK = 0x68616B6E0002

_MIGRATIONS: tuple[str, ...] = (
    # 1: documents, chunks with embeddings, the change sequence.
    """
    CREATE TABLE knowledge_documents (
        id text PRIMARY KEY,
        source text NOT NULL,
        metadata text NOT NULL,
        content_hash text NOT NULL,
        chunk_count integer NOT NULL,
        seq bigint NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE knowledge_chunks (
        id bigserial PRIMARY KEY,
        document_id text NOT NULL REFERENCES knowledge_documents(id) ON DELETE CASCADE,
        ordinal integer NOT NULL,
        text text NOT NULL,
        start_offset integer NOT NULL,
        end_offset integer NOT NULL,
        embedding bytea NOT NULL
    );
    CREATE INDEX knowledge_chunks_by_document ON knowledge_chunks(document_id, ordinal);
    CREATE TABLE knowledge_changes (
        seq bigserial PRIMARY KEY,
        document_id text NOT NULL,
        kind text NOT NULL CHECK (kind IN ('upsert', 'delete')),
        at timestamptz NOT NULL DEFAULT now()
    );
    """,
)
SCHEMA_VERSION = len(_MIGRATIONS)


def ensure_schema(conn: psycopg.Connection) -> str:
    """Create or migrate the knowledge tables; returns the store's ``kb_id``.

    Raises :class:`SharedSchemaError` when the database holds a newer schema version.
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS knowledge_meta (key text PRIMARY KEY, value text NOT NULL)")
        row = conn.execute("SELECT value FROM knowledge_meta WHERE key = 'schema_version'").fetchone()
        version = int(row[0]) if row is not None else 0
        if version > SCHEMA_VERSION:
            raise SharedSchemaError(
                f"the shared knowledge store has schema version {version}; this code knows versions up to "
                f"{SCHEMA_VERSION}: upgrade hybrid-assistant on this replica (a newer release migrated "
                "the database)"
            )
        for number in range(version + 1, SCHEMA_VERSION + 1):
            logger.info("migrating the shared knowledge store to schema version %d", number)
            conn.execute(_MIGRATIONS[number - 1])
        if version < SCHEMA_VERSION:
            conn.execute(
                """INSERT INTO knowledge_meta VALUES ('schema_version', %s)
                   ON CONFLICT (key) DO UPDATE SET value = excluded.value""",
                (str(SCHEMA_VERSION),),
            )
        conn.execute(
            "INSERT INTO knowledge_meta VALUES ('kb_id', %s) ON CONFLICT (key) DO NOTHING",
            (uuid.uuid4().hex,),
        )
        conn.execute("INSERT INTO knowledge_meta VALUES ('pruned_through', '0') ON CONFLICT (key) DO NOTHING")
        kb_id = conn.execute("SELECT value FROM knowledge_meta WHERE key = 'kb_id'").fetchone()
    assert kb_id is not None
    return str(kb_id[0])
