"""PostgreSQL plumbing shared by every store that keeps replica-shared state (``database_url``).

- :func:`open_pool` - a psycopg 3 connection pool that checks a connection before handing it out
  (after a database restart, pooled connections are dead; a checked pool replaces them instead of
  failing the caller's first query) and that fails fast with :class:`DatabaseUnavailable`.
- :func:`migrate` - versioned schema migrations, one component at a time. Every replica calls it
  at start-up: the migrations run in order, in ONE transaction, under a transaction-scoped
  advisory lock, so two replicas starting together cannot both apply a step (the second waits,
  then sees the new version and has nothing to do). A database whose version is newer than the
  code knows is refused (:class:`SchemaTooNew`): an old replica writing into a newer schema would
  corrupt it silently.

The ``schema_version`` table has one row per component (``experiments``, ``knowledge``, ...), so
independent stores version their own tables in one database. Only the DSN string crosses into
this module: packages that must not import ``server`` can copy the same protocol.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

log = logging.getLogger(__name__)

# One lock key for every component's migrations: components may depend on each other's tables.
MIGRATION_LOCK = 0x4841_5343_4845_4D41  # "HASCHEMA"
CONNECT_TIMEOUT_S = 5
# The pool's own reconnection backs off exponentially without a cap (1, 2, 4 ... s up to this
# timeout): after a long outage its next attempt could be minutes away. Giving up after 2 s
# instead hands reconnection to demand: the next caller that waits grows the pool at once.
RECONNECT_TIMEOUT_S = 2.0


class DatabaseUnavailable(RuntimeError):
    """The database cannot be reached (down, restarting, or the pool is exhausted)."""


class SchemaTooNew(RuntimeError):
    """The database holds a schema version this code does not know; the message says what to do."""


def redact(dsn: str) -> str:
    """The DSN without its password, for logs and messages."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


def open_pool(dsn: str, *, name: str, max_size: int = 4, timeout_s: float = 5.0) -> ConnectionPool:
    """An open pool (waits for the first connection); DatabaseUnavailable if none comes in time."""
    pool = ConnectionPool(
        dsn,
        min_size=1,
        max_size=max_size,
        name=name,
        timeout=timeout_s,
        check=ConnectionPool.check_connection,
        kwargs={"connect_timeout": CONNECT_TIMEOUT_S},
        reconnect_timeout=RECONNECT_TIMEOUT_S,
        open=False,
    )
    try:
        pool.open(wait=True, timeout=timeout_s)
    except PoolTimeout as exc:
        pool.close()
        raise DatabaseUnavailable(f"cannot connect to PostgreSQL at {redact(dsn)}: {exc}") from None
    return pool


def migrate(conn: psycopg.Connection[Any], component: str, migrations: Sequence[str]) -> int:
    """Bring ``component``'s tables to version ``len(migrations)``; returns the version found.

    ``migrations[i]`` takes the schema from version ``i`` to ``i + 1``; a migration is never edited
    once released (add a new one). Runs in one transaction on ``conn`` (not in autocommit).
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
            raise SchemaTooNew(
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
