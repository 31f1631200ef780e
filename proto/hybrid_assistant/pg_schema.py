"""The shared PostgreSQL database's schema protocol, one for every component that keeps state there.

Components (``experiments`` in ``server/experiments/pg_store.py``, ``knowledge`` in
``retrieval/shared_schema.py``) version their own tables in one database: the ``schema_version``
table has a row per component. Every replica calls :func:`migrate` at start-up: the migrations
run in order, in ONE transaction, under a transaction-scoped advisory lock shared by all
components (they may depend on each other's tables), so two replicas starting together cannot
both apply a step (the second waits, then finds nothing to do). DDL is transactional in
PostgreSQL, so a failed migration leaves the previous version intact. A version newer than the
code knows is refused: an old replica writing into a newer schema would corrupt it silently.

It lives at the package root because both ``server`` and ``retrieval`` use it and ``retrieval``
may not import ``server``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

log = logging.getLogger(__name__)

MIGRATION_LOCK = 0x4841_5343_4845_4D41  # "HASCHEMA"


class SchemaTooNew(RuntimeError):
    """The database holds a schema version this code does not know; the message says what to do."""


def redact(dsn: str) -> str:
    """The DSN without its password (URL or key=value form), for messages and logs."""
    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparsable DSN>"
    user, host = parts.get("user", ""), parts.get("host", "localhost")
    return f"postgresql://{user}@{host}:{parts.get('port', 5432)}/{parts.get('dbname', '')}"


def migrate(
    conn: psycopg.Connection[Any],
    component: str,
    migrations: Sequence[str],
    too_new: type[Exception] = SchemaTooNew,
) -> int:
    """Bring ``component``'s tables to version ``len(migrations)``; returns the version found.

    ``migrations[i]`` takes the schema from version ``i`` to ``i + 1``; a migration is never edited
    once released (add a new one). Runs in one transaction on ``conn``. A newer version raises
    ``too_new`` (a component's own error type, so its callers map it as they map their errors).
    """
    target = len(migrations)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            "component TEXT PRIMARY KEY, version INTEGER NOT NULL, updated_at TIMESTAMPTZ NOT NULL)"
        )
        row = conn.execute("SELECT version FROM schema_version WHERE component = %s", (component,)).fetchone()
        found = int(row[0]) if row is not None else 0
        if found > target:
            raise too_new(
                f"the database's {component} schema is at version {found}, but this hybrid-assistant "
                f"knows versions up to {target}: a newer release migrated it. Run that release (or "
                "newer) on every replica, or point database_url at another database"
            )
        for version in range(found, target):
            conn.execute(migrations[version].encode())
            log.info("database: %s schema migrated to version %d", component, version + 1)
        if found < target:
            conn.execute(
                "INSERT INTO schema_version VALUES (%s, %s, now()) ON CONFLICT (component) "
                "DO UPDATE SET version = EXCLUDED.version, updated_at = EXCLUDED.updated_at",
                (component, target),
            )
    return found
