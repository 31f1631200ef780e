"""The request-log database: one SQLite file (WAL) with requests, feedback and experiments.

Three kinds of connection, so that no caller waits on another's work:
- the log writer's (one thread, :mod:`hybrid_assistant.server.experiments.request_log`):
  ``synchronous=NORMAL`` - in WAL mode a committed batch survives a process crash (kill -9),
  though not a power cut;
- the durable connection (feedback and experiment definitions, behind a lock): ``synchronous=FULL``
  - every commit is fsync'd before the call is acknowledged;
- short-lived read-only connections for reports and exports (WAL readers never block writers).

A request id is the key of the log and is never reused: feedback attaches to the id, so a
request that could replace an earlier row would steal its subject, arm and feedback. The
serving side refuses a caller-supplied id that is in flight, queued or stored
(:meth:`hybrid_assistant.server.experiments.service.ExperimentManager.claim_request_id`,
ALREADY_EXISTS), and the insert here is ``INSERT OR IGNORE`` as the last guard: a row whose id
is already stored is dropped (counted and logged by the writer), never written over the first.
Ids the server assigns are random UUIDs.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path

from hybrid_assistant.server.errors import AlreadyExists, NotFound
from hybrid_assistant.server.experiments.log_store import InsertResult, export_filters
from hybrid_assistant.server.validation import MAX_ECHO_CHARS

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    request_id TEXT PRIMARY KEY,
    time_unix REAL NOT NULL,
    experiment TEXT NOT NULL,
    arm TEXT NOT NULL,
    in_test INTEGER NOT NULL,
    subject_key TEXT NOT NULL,
    adapter TEXT NOT NULL,
    retrieval INTEGER NOT NULL,
    document_ids TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    ttft_ms REAL NOT NULL,
    total_ms REAL NOT NULL,
    status TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS requests_time ON requests (time_unix);
CREATE INDEX IF NOT EXISTS requests_experiment ON requests (experiment, in_test);
CREATE TABLE IF NOT EXISTS feedback (
    request_id TEXT NOT NULL,
    metric TEXT NOT NULL,
    value REAL NOT NULL,
    time_unix REAL NOT NULL,
    PRIMARY KEY (request_id, metric)
);
CREATE TABLE IF NOT EXISTS experiments (
    name TEXT PRIMARY KEY,
    definition TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class LogRecord:
    """One served Generate, as the log keeps it."""

    request_id: str
    time_unix: float
    experiment: str
    arm: str
    in_test: bool
    subject_key: str
    adapter: str
    retrieval: bool
    document_ids: tuple[str, ...]
    prompt_tokens: int
    completion_tokens: int
    ttft_ms: float
    total_ms: float
    status: str

    def row(self) -> tuple[object, ...]:
        values = [getattr(self, f.name) for f in fields(self)]
        values[8] = json.dumps(list(self.document_ids))
        return tuple(values)

    @classmethod
    def from_row(cls, row: Sequence[object]) -> LogRecord:
        values = list(row)
        values[4], values[7] = bool(values[4]), bool(values[7])
        values[8] = tuple(json.loads(str(values[8])))
        return cls(*values)  # type: ignore[arg-type]


_COLUMNS = ", ".join(f.name for f in fields(LogRecord))
# Never OR REPLACE: a stored row (and the feedback that points at it) is never written over.
_INSERT_IF_ABSENT = (
    f"INSERT OR IGNORE INTO requests ({_COLUMNS}) VALUES ({', '.join('?' * len(fields(LogRecord)))})"
)


def _same_row(conn: sqlite3.Connection, record: LogRecord) -> bool:
    """True if the stored row for ``record``'s id is ``record`` itself (feedback wrote it first)."""
    stored = conn.execute(
        f"SELECT {_COLUMNS} FROM requests WHERE request_id = ?", (record.request_id,)
    ).fetchone()
    return stored is not None and tuple(stored) == record.row()


def connect(path: Path, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


class SqliteWriter:
    """The log writer thread's connection (``synchronous=NORMAL``; see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self._conn = connect(path, "NORMAL")

    def insert(self, records: Sequence[LogRecord]) -> InsertResult:
        return InsertResult(LogDatabase.insert(self._conn, records), [])

    def delete_before(self, cutoff_unix: float) -> int:
        return LogDatabase.delete_before(self._conn, cutoff_unix)

    def close(self) -> None:
        self._conn.close()


class LogDatabase:
    """The SQLite backend of :class:`~hybrid_assistant.server.experiments.log_store.LogStore`."""

    backend = "sqlite"
    shared = False

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._durable = connect(path, "FULL")
        self._lock = threading.Lock()
        self._durable.executescript(_SCHEMA)
        # Id lookups for new requests: their own connection and lock, so they never queue
        # behind a durable (fsync'd) write.
        self._lookup = connect(path, "NORMAL")
        self._lookup.execute("PRAGMA query_only=1")
        self._lookup_lock = threading.Lock()
        version = self._durable.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            self._durable.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        elif version != SCHEMA_VERSION:
            raise RuntimeError(
                f"request log {str(path)!r} has schema {version}; this code reads {SCHEMA_VERSION}"
            )

    def close(self) -> None:
        with self._lock:
            self._durable.close()
        with self._lookup_lock:
            self._lookup.close()

    # ------------------------------------------------------------------ writer side

    def writer(self) -> SqliteWriter:
        return SqliteWriter(self.path)

    @staticmethod
    def insert(conn: sqlite3.Connection, records: Sequence[LogRecord]) -> list[str]:
        """Insert the rows in one transaction; returns the ids that were already stored (those
        rows are not written: an earlier request's row is never replaced)."""
        conn.execute("BEGIN")
        try:
            ignored = []
            for record in records:
                if conn.execute(_INSERT_IF_ABSENT, record.row()).rowcount == 0 and not _same_row(
                    conn, record
                ):
                    ignored.append(record.request_id)  # the same row, stored by feedback, is no duplicate
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # a failed COMMIT (disk full) may have ended it already
                conn.execute("ROLLBACK")
            raise
        return ignored

    @staticmethod
    def delete_before(conn: sqlite3.Connection, cutoff_unix: float) -> int:
        """Delete requests older than the cutoff and their feedback; returns the requests deleted."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "DELETE FROM feedback WHERE request_id IN "
                "(SELECT request_id FROM requests WHERE time_unix < ?)",
                (cutoff_unix,),
            )
            deleted = conn.execute("DELETE FROM requests WHERE time_unix < ?", (cutoff_unix,)).rowcount
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return int(deleted)

    # ------------------------------------------------------------------ durable writes

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._durable.execute("BEGIN IMMEDIATE")
            try:
                yield self._durable
                self._durable.execute("COMMIT")
            except BaseException:
                # A failed COMMIT (disk full) may already have ended the transaction: the
                # original error is the one to report, not "cannot rollback".
                if self._durable.in_transaction:
                    self._durable.execute("ROLLBACK")
                raise

    def record_feedback(
        self, request_id: str, metric: str, value: float, now: float, pending: LogRecord | None
    ) -> bool:
        """Store feedback, fsync'd; True if the same value was already there (nothing changed).

        ``pending``: the request's row if it is still queued for the log writer; it is written
        here (in the same durable transaction) so the feedback never points at a missing request.
        """
        with self._transaction() as conn:
            if pending is not None:
                conn.execute(_INSERT_IF_ABSENT, pending.row())
            if conn.execute("SELECT 1 FROM requests WHERE request_id = ?", (request_id,)).fetchone() is None:
                raise NotFound(f"request {request_id!r} is not in the request log")
            row = conn.execute(
                "SELECT value FROM feedback WHERE request_id = ? AND metric = ?", (request_id, metric)
            ).fetchone()
            if row is not None:
                if row[0] == value:
                    return True
                raise AlreadyExists(
                    f"request {request_id!r} already has {metric} = {row[0]!r}; feedback is recorded "
                    f"once per (request, metric) and cannot be changed to {value!r}"
                )
            conn.execute("INSERT INTO feedback VALUES (?, ?, ?, ?)", (request_id, metric, value, now))
        return False

    def save_experiment(self, name: str, definition: str, *, create: bool) -> None:
        with self._transaction() as conn:
            if create:
                try:
                    conn.execute("INSERT INTO experiments VALUES (?, ?)", (name, definition))
                except sqlite3.IntegrityError:
                    raise AlreadyExists(f"experiment {name!r} already exists") from None
            else:
                conn.execute("UPDATE experiments SET definition = ? WHERE name = ?", (definition, name))

    def update_experiment(self, name: str, change: Callable[[str], str]) -> str:
        with self._transaction() as conn:
            row = conn.execute("SELECT definition FROM experiments WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise NotFound(f"experiment {name[:MAX_ECHO_CHARS]!r} does not exist")
            definition = change(str(row[0]))
            conn.execute("UPDATE experiments SET definition = ? WHERE name = ?", (definition, name))
        return definition

    def experiments(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._durable.execute("SELECT definition FROM experiments ORDER BY name")]

    # ------------------------------------------------------------------ reads

    def has_request(self, request_id: str) -> bool:
        """Whether a request with this id is stored (blocking: call off the event loop)."""
        with self._lookup_lock:
            row = self._lookup.execute(
                "SELECT 1 FROM requests WHERE request_id = ?", (request_id,)
            ).fetchone()
        return row is not None

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """A read-only connection in one read transaction (a consistent snapshot)."""
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout=10000")
            conn.execute("BEGIN")
            yield conn
        finally:
            conn.close()

    def experiment_requests(self, experiment: str) -> tuple[list[LogRecord], int]:
        """The experiment's in-test requests, and how many of its requests were not in the test."""
        with self.reading() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM requests WHERE experiment = ? AND in_test = 1", (experiment,)
            ).fetchall()
            excluded = conn.execute(
                "SELECT COUNT(*) FROM requests WHERE experiment = ? AND in_test = 0", (experiment,)
            ).fetchone()[0]
        return [LogRecord.from_row(r) for r in rows], int(excluded)

    def experiment_feedback(self, experiment: str) -> list[tuple[str, str, float]]:
        """(request id, metric, value) of every feedback on the experiment's in-test requests."""
        with self.reading() as conn:
            rows = conn.execute(
                "SELECT f.request_id, f.metric, f.value FROM feedback f JOIN requests r "
                "ON r.request_id = f.request_id WHERE r.experiment = ? AND r.in_test = 1",
                (experiment,),
            ).fetchall()
        return [(str(a), str(b), float(c)) for a, b, c in rows]

    def export_page(
        self, experiment: str, since: float, until: float, after: tuple[float, str], limit: int
    ) -> list[tuple[LogRecord, dict[str, float]]]:
        """Requests (with their feedback) in time order, after the ``(time, id)`` key; keyset pages."""
        where, args = export_filters(experiment, since, until, after, "?")
        sql = (
            f"SELECT {_COLUMNS}, (SELECT json_group_object(metric, value) FROM feedback f "
            f"WHERE f.request_id = requests.request_id) FROM requests WHERE {' AND '.join(where)} "
            "ORDER BY time_unix, request_id LIMIT ?"
        )
        with self.reading() as conn:
            rows = conn.execute(sql, (*args, limit)).fetchall()
        return [(LogRecord.from_row(r[:-1]), json.loads(r[-1] or "{}")) for r in rows]
