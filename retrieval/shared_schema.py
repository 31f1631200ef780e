"""The knowledge tables in the shared PostgreSQL database, and their versioned migrations.

Every replica runs :func:`ensure_schema` when it opens the shared store: the migrations follow
:mod:`hybrid_assistant.pg_schema`, the protocol every component of the shared database uses (a
``schema_version`` row per component, this one ``knowledge``; one transaction under one advisory
lock; a newer version refused, here as :class:`SharedSchemaError`).

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

from hybrid_assistant.pg_schema import migrate
from hybrid_assistant.retrieval.errors import SharedSchemaError

logger = logging.getLogger(__name__)

COMPONENT = "knowledge"
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
    migrate(conn, COMPONENT, _MIGRATIONS, too_new=SharedSchemaError)
    with conn.transaction():
        conn.execute(
            "INSERT INTO knowledge_meta VALUES ('kb_id', %s) ON CONFLICT (key) DO NOTHING",
            (uuid.uuid4().hex,),
        )
        conn.execute("INSERT INTO knowledge_meta VALUES ('pruned_through', '0') ON CONFLICT (key) DO NOTHING")
        kb_id = conn.execute("SELECT value FROM knowledge_meta WHERE key = 'kb_id'").fetchone()
    assert kb_id is not None
    return str(kb_id[0])
