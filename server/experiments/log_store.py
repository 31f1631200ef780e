"""The one interface of the experiments' storage, and the choice of backend.

Two backends keep requests, feedback and experiment definitions:

- :class:`~hybrid_assistant.server.experiments.store.LogDatabase` - one SQLite file in the data
  directory, the embedded default (nothing to set up; one replica);
- :class:`~hybrid_assistant.server.experiments.pg_store.PostgresLogStore` - PostgreSQL, chosen when
  ``database_url`` is set, shared by every replica (``shared`` is True: the experiment manager then
  re-reads definitions every ``experiments_refresh_s``, and feedback waits up to
  ``feedback_wait_s`` for a row another replica has not written yet).

A store raises :class:`~hybrid_assistant.server.errors.Unavailable` when its database cannot be
reached: the request-log writer keeps the batch and retries, callers get UNAVAILABLE.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple, Protocol

from hybrid_assistant.pg_schema import redact

if TYPE_CHECKING:
    from hybrid_assistant.server.config import Settings
    from hybrid_assistant.server.experiments.store import LogRecord

log = logging.getLogger(__name__)


class InsertResult(NamedTuple):
    duplicates: list[str]  # ids already stored with another row: not written, the first row kept
    rejected: list[str]  # rows the database refused (malformed); the rest of the batch is written


class LogWriter(Protocol):
    """The request-log writer thread's side of the store."""

    def insert(self, records: Sequence[LogRecord]) -> InsertResult:
        """Insert in one transaction (Unavailable when the database cannot be reached)."""

    def delete_before(self, cutoff_unix: float) -> int:
        """Delete requests older than the cutoff with their feedback; returns the requests deleted."""

    def close(self) -> None: ...


class LogStore(Protocol):
    backend: str  # "sqlite" | "postgresql"
    shared: bool  # other replicas write to the same store

    def writer(self) -> LogWriter: ...

    def close(self) -> None: ...

    def record_feedback(
        self, request_id: str, metric: str, value: float, now: float, pending: LogRecord | None
    ) -> bool:
        """Store feedback durably; True if the same value was already there. ``pending``: this
        replica's queued row for the request, written in the same transaction. NOT_FOUND for an
        unknown request; ALREADY_EXISTS for a different value."""

    def save_experiment(self, name: str, definition: str, *, create: bool) -> None: ...

    def update_experiment(self, name: str, change: Callable[[str], str]) -> str:
        """Replace the stored definition by ``change(stored)`` atomically (no lost update between
        replicas); returns the new definition. NOT_FOUND if there is none."""

    def experiments(self) -> list[str]:
        """Every stored experiment definition (JSON), by name."""

    def has_request(self, request_id: str) -> bool: ...

    def experiment_requests(self, experiment: str) -> tuple[list[LogRecord], int]: ...

    def experiment_feedback(self, experiment: str) -> list[tuple[str, str, float]]: ...

    def export_page(
        self, experiment: str, since: float, until: float, after: tuple[float, str], limit: int
    ) -> list[tuple[LogRecord, dict[str, float]]]: ...


def export_filters(
    experiment: str, since: float, until: float, after: tuple[float, str], mark: str
) -> tuple[list[str], list[object]]:
    """WHERE terms and their arguments of an export page, for either backend's placeholder."""
    where = [f"(time_unix, request_id) > ({mark}, {mark})"]
    args: list[object] = [*after]
    for term, value, wanted in (
        ("experiment = ", experiment, bool(experiment)),
        ("time_unix >= ", since, since > 0),
        ("time_unix < ", until, until > 0),
    ):
        if wanted:
            where.append(term + mark)
            args.append(value)
    return where, args


def open_log_store(settings: Settings) -> LogStore:
    """PostgreSQL when ``database_url`` is set (migrated on open), else the SQLite file."""
    if settings.database_url is None:
        from hybrid_assistant.server.experiments.store import LogDatabase

        return LogDatabase(settings.request_log_path)
    from hybrid_assistant.server.experiments.pg_store import PostgresLogStore

    dsn = settings.database_url.get_secret_value()
    store = PostgresLogStore.open(dsn)
    log.info("experiments, request log and feedback: PostgreSQL at %s", redact(dsn))
    return store
