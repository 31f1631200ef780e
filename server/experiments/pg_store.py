"""The PostgreSQL backend of the experiments' store: requests, feedback and experiment definitions
shared by every replica that points ``database_url`` at one database.

**Schema.** Versioned migrations (:data:`MIGRATIONS`, component ``experiments``) run at open, under
:func:`hybrid_assistant.server.database.migrate`'s advisory lock; a newer schema is refused.
Feedback references its request (``ON DELETE CASCADE``: retention takes feedback with it).

**Request ids are never reused**: the writer's insert is ``ON CONFLICT DO NOTHING``, so a stored
row (and the feedback that points at it) is never replaced; a conflicting row is reported back as
a duplicate unless it is the very row feedback wrote first.

**Feedback** is never stored without its request (a foreign key), so NOT_FOUND means an unknown
id and a report joins nothing dangling; the wait for a row another replica has not written yet is
the service's (:meth:`~hybrid_assistant.server.experiments.service.ExperimentManager.record_feedback`).
Every feedback is committed (``synchronous_commit`` on) before it is acknowledged.

**Outages.** Connections come from a checked pool; a database that cannot be reached raises
:class:`~hybrid_assistant.server.errors.Unavailable` (the writer keeps its batch and retries).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import fields
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from hybrid_assistant.pg_schema import migrate
from hybrid_assistant.server.database import open_pool
from hybrid_assistant.server.errors import AlreadyExists, NotFound, Unavailable
from hybrid_assistant.server.experiments.log_store import InsertResult, export_filters
from hybrid_assistant.server.experiments.store import LogRecord
from hybrid_assistant.server.validation import MAX_ECHO_CHARS

log = logging.getLogger(__name__)

COMPONENT = "experiments"
MIGRATIONS = (
    """
    CREATE TABLE requests (
        request_id TEXT COLLATE "C" PRIMARY KEY,
        time_unix DOUBLE PRECISION NOT NULL,
        experiment TEXT NOT NULL,
        arm TEXT NOT NULL,
        in_test BOOLEAN NOT NULL,
        subject_key TEXT NOT NULL,
        adapter TEXT NOT NULL,
        retrieval BOOLEAN NOT NULL,
        document_ids TEXT NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        ttft_ms DOUBLE PRECISION NOT NULL,
        total_ms DOUBLE PRECISION NOT NULL,
        status TEXT NOT NULL
    );
    CREATE INDEX requests_time ON requests (time_unix);
    CREATE INDEX requests_experiment ON requests (experiment, in_test);
    CREATE TABLE feedback (
        request_id TEXT COLLATE "C" NOT NULL REFERENCES requests ON DELETE CASCADE,
        metric TEXT NOT NULL,
        value DOUBLE PRECISION NOT NULL,
        time_unix DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (request_id, metric)
    );
    CREATE TABLE experiments (
        name TEXT PRIMARY KEY,
        definition TEXT NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
    );
    """,
)
WRITER_CONNECT_TIMEOUT_S = 2.0  # the writer retries; a short wait keeps close() prompt
LOOKUP_TIMEOUT_S = 1.0  # a request-id check on the serving path waits no longer than this
POOL_SIZE = 8

_COLUMNS = ", ".join(f.name for f in fields(LogRecord))
# PostgreSQL array types for unnest(), from LogRecord's field types (document ids go as JSON text).
_PG_TYPES = {"str": "text", "float": "float8", "bool": "bool", "int": "int4", "tuple[str, ...]": "text"}
_TYPES = [_PG_TYPES[str(f.type)] for f in fields(LogRecord)]
_INSERT = (
    f"INSERT INTO requests ({_COLUMNS}) SELECT * FROM unnest("
    + ", ".join(f"%s::{t}[]" for t in _TYPES)
    + ") ON CONFLICT (request_id) DO NOTHING RETURNING request_id"
)
_TRANSIENT = (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout)


def _columns(records: Sequence[LogRecord]) -> list[list[object]]:
    rows = [record.row() for record in records]
    return [list(column) for column in zip(*rows, strict=True)]


class PostgresWriter:
    """The request-log writer's side: batches as one ``INSERT ... SELECT FROM unnest``."""

    def __init__(self, store: PostgresLogStore) -> None:
        self._store = store

    def insert(self, records: Sequence[LogRecord]) -> InsertResult:
        try:
            with self._store.connection(WRITER_CONNECT_TIMEOUT_S) as conn:
                return InsertResult(self._insert(conn, records), [])
        except psycopg.DataError:
            # One malformed row (a NUL in a subject key: PostgreSQL text cannot hold it) must not
            # lose its whole batch: write row by row, and report only the rows refused.
            duplicates, rejected = [], []
            for record in records:
                try:
                    with self._store.connection(WRITER_CONNECT_TIMEOUT_S) as conn:
                        duplicates += self._insert(conn, [record])
                except psycopg.DataError as exc:
                    log.error("request log: row %r refused by PostgreSQL: %s", record.request_id[:200], exc)
                    rejected.append(record.request_id)
            return InsertResult(duplicates, rejected)

    @staticmethod
    def _insert(conn: psycopg.Connection[Any], records: Sequence[LogRecord]) -> list[str]:
        with conn.transaction():
            inserted = {row[0] for row in conn.execute(_INSERT, _columns(records)).fetchall()}
            others = [r for r in records if r.request_id not in inserted]
            if not others:
                return []
            stored = {
                row[0]: LogRecord.from_row(row)
                for row in conn.execute(
                    f"SELECT {_COLUMNS} FROM requests WHERE request_id = ANY(%s)",
                    ([r.request_id for r in others],),
                )
            }
        # The same row, stored by feedback first, is no duplicate.
        return [r.request_id for r in others if stored.get(r.request_id) != r]

    def delete_before(self, cutoff_unix: float) -> int:
        with self._store.connection(WRITER_CONNECT_TIMEOUT_S) as conn, conn.transaction():
            return conn.execute("DELETE FROM requests WHERE time_unix < %s", (cutoff_unix,)).rowcount

    def close(self) -> None:
        """Nothing to release: connections belong to the store's pool."""


class PostgresLogStore:
    """:class:`~hybrid_assistant.server.experiments.log_store.LogStore` on a shared PostgreSQL."""

    backend = "postgresql"
    shared = True

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool

    @classmethod
    def open(cls, dsn: str) -> PostgresLogStore:
        """Connect and migrate (SchemaTooNew, DatabaseUnavailable say why it cannot)."""
        pool = open_pool(dsn, name="experiments", max_size=POOL_SIZE)
        try:
            with pool.connection() as conn:
                migrate(conn, COMPONENT, MIGRATIONS)
        except BaseException:
            pool.close()
            raise
        return cls(pool)

    def close(self) -> None:
        self._pool.close()

    @contextlib.contextmanager
    def connection(self, timeout: float | None = None) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection; Unavailable when the database cannot be reached."""
        try:
            with self._pool.connection(timeout=timeout) as conn:
                yield conn
        except _TRANSIENT as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise Unavailable(f"the PostgreSQL database is unreachable ({reason}); retry later") from exc

    def writer(self) -> PostgresWriter:
        return PostgresWriter(self)

    # ------------------------------------------------------------------ durable writes

    def record_feedback(
        self, request_id: str, metric: str, value: float, now: float, pending: LogRecord | None
    ) -> bool:
        with self.connection() as conn, conn.transaction():
            if pending is not None:
                PostgresWriter._insert(conn, [pending])
            # FOR SHARE: retention cannot delete the request under its new feedback.
            found = conn.execute(
                "SELECT 1 FROM requests WHERE request_id = %s FOR SHARE", (request_id,)
            ).fetchone()
            if found is None:
                raise NotFound(f"request {request_id[:MAX_ECHO_CHARS]!r} is not in the request log")
            return _store_feedback(conn, request_id, metric, value, now)

    def save_experiment(self, name: str, definition: str, *, create: bool) -> None:
        with self.connection() as conn, conn.transaction():
            if create:
                inserted = conn.execute(
                    "INSERT INTO experiments (name, definition) VALUES (%s, %s) "
                    "ON CONFLICT (name) DO NOTHING RETURNING 1",
                    (name, definition),
                ).fetchone()
                if inserted is None:
                    raise AlreadyExists(f"experiment {name!r} already exists")
            else:
                conn.execute(
                    "UPDATE experiments SET definition = %s, updated_at = now() WHERE name = %s",
                    (definition, name),
                )

    def update_experiment(self, name: str, change: Callable[[str], str]) -> str:
        with self.connection() as conn, conn.transaction():
            row = conn.execute(
                "SELECT definition FROM experiments WHERE name = %s FOR UPDATE", (name,)
            ).fetchone()
            if row is None:
                raise NotFound(f"experiment {name[:MAX_ECHO_CHARS]!r} does not exist")
            definition = change(str(row[0]))
            conn.execute(
                "UPDATE experiments SET definition = %s, updated_at = now() WHERE name = %s",
                (definition, name),
            )
        return definition

    # ------------------------------------------------------------------ reads

    def experiments(self) -> list[str]:
        with self.connection() as conn:
            return [str(r[0]) for r in conn.execute("SELECT definition FROM experiments ORDER BY name")]

    def has_request(self, request_id: str) -> bool:
        with self.connection(LOOKUP_TIMEOUT_S) as conn:
            row = conn.execute("SELECT 1 FROM requests WHERE request_id = %s", (request_id,)).fetchone()
        return row is not None

    def experiment_requests(self, experiment: str) -> tuple[list[LogRecord], int]:
        with self.connection() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM requests WHERE experiment = %s AND in_test", (experiment,)
            ).fetchall()
            excluded = conn.execute(
                "SELECT count(*) FROM requests WHERE experiment = %s AND NOT in_test", (experiment,)
            ).fetchone()
        return [LogRecord.from_row(r) for r in rows], int(excluded[0]) if excluded else 0

    def experiment_feedback(self, experiment: str) -> list[tuple[str, str, float]]:
        with self.connection() as conn:
            rows = conn.execute(
                "SELECT f.request_id, f.metric, f.value FROM feedback f JOIN requests r "
                "ON r.request_id = f.request_id WHERE r.experiment = %s AND r.in_test",
                (experiment,),
            ).fetchall()
        return [(str(a), str(b), float(c)) for a, b, c in rows]

    def export_page(
        self, experiment: str, since: float, until: float, after: tuple[float, str], limit: int
    ) -> list[tuple[LogRecord, dict[str, float]]]:
        where, args = export_filters(experiment, since, until, after, "%s")
        query = (
            f"SELECT {_COLUMNS}, (SELECT json_object_agg(metric, value) FROM feedback f "
            f"WHERE f.request_id = requests.request_id) FROM requests WHERE {' AND '.join(where)} "
            "ORDER BY time_unix, request_id LIMIT %s"
        )
        with self.connection() as conn:
            rows = conn.execute(query.encode(), (*args, limit)).fetchall()
        return [(LogRecord.from_row(r[:-1]), dict(r[-1] or {})) for r in rows]


def _store_feedback(
    conn: psycopg.Connection[Any], request_id: str, metric: str, value: float, now: float
) -> bool:
    inserted = conn.execute(
        "INSERT INTO feedback VALUES (%s, %s, %s, %s) ON CONFLICT (request_id, metric) DO NOTHING "
        "RETURNING 1",
        (request_id, metric, value, now),
    ).fetchone()
    if inserted is not None:
        return False
    row = conn.execute(
        "SELECT value FROM feedback WHERE request_id = %s AND metric = %s", (request_id, metric)
    ).fetchone()
    if row is not None and row[0] == value:
        return True
    raise AlreadyExists(
        f"request {request_id!r} already has {metric} = {row[0] if row else None!r}; feedback is recorded "
        f"once per (request, metric) and cannot be changed to {value!r}"
    )
