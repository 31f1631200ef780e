"""The knowledge tables in the shared PostgreSQL database, and their versioned migrations.

Every replica runs :func:`ensure_schema` when it opens the shared store. The protocol is the one
``server/database.py`` uses for the other shared state (this package may not import ``server``,
so it is repeated here, and must stay in step): one ``schema_version`` table with a row per
component (this one is ``knowledge``), and the check plus the migrations in one transaction under
the same transaction-level advisory lock, so two replicas starting at the same moment cannot both
apply a step (the second waits, then finds the schema current). DDL is transactional in
PostgreSQL, so a failed migration leaves the previous version intact. A version newer than this
code knows is refused rather than guessed at.

Tables (prefixed ``knowledge_``, beside the other shared state):

* ``knowledge_meta`` — key/value: ``kb_id`` (identity of this shared store; a replica cache built
  from another database is rebuilt), ``embedder``/``dimension``, ``pruned_through`` (highest
  change sequence pruned).
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

COMPONENT = "knowledge"
# server/database.py's MIGRATION_LOCK: every component's migrations take the same lock.
MIGRATION_LOCK = 0x4841_5343_4845_4D41
# Serialises knowledge writes, so that change-sequence order is commit order (shared_store).
WRITE_LOCK = 0x68616B6E0002

_MIGRATIONS: tuple[str, ...] = (
    # 1: meta, documents, chunks with embeddings, the change sequence.
    """
    CREATE TABLE knowledge_meta (key text PRIMARY KEY, value text NOT NULL);
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

    Raises :class:`SharedSchemaError` when the database holds a newer knowledge schema.
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            "component TEXT PRIMARY KEY, version INTEGER NOT NULL, updated_at TIMESTAMPTZ NOT NULL)"
        )
        row = conn.execute("SELECT version FROM schema_version WHERE component = %s", (COMPONENT,)).fetchone()
        found = int(row[0]) if row is not None else 0
        if found > SCHEMA_VERSION:
            raise SharedSchemaError(
                f"the database's {COMPONENT} schema is at version {found}, but this hybrid-assistant "
                f"knows versions up to {SCHEMA_VERSION}: a newer release migrated it. Run that release "
                "(or newer) on every replica, or point database_url at another database"
            )
        for version in range(found, SCHEMA_VERSION):
            conn.execute(_MIGRATIONS[version].encode())
            logger.info("database: %s schema migrated to version %d", COMPONENT, version + 1)
        if found < SCHEMA_VERSION:
            conn.execute(
                "INSERT INTO schema_version VALUES (%s, %s, now()) ON CONFLICT (component) "
                "DO UPDATE SET version = EXCLUDED.version, updated_at = EXCLUDED.updated_at",
                (COMPONENT, SCHEMA_VERSION),
            )
        conn.execute(
            "INSERT INTO knowledge_meta VALUES ('kb_id', %s) ON CONFLICT (key) DO NOTHING",
            (uuid.uuid4().hex,),
        )
        conn.execute("INSERT INTO knowledge_meta VALUES ('pruned_through', '0') ON CONFLICT (key) DO NOTHING")
        kb_id = conn.execute("SELECT value FROM knowledge_meta WHERE key = 'kb_id'").fetchone()
    assert kb_id is not None
    return str(kb_id[0])
