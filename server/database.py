"""The server's PostgreSQL connection pool for replica-shared state (``database_url``).

:func:`open_pool` is a psycopg 3 connection pool that checks a connection before handing it out
(after a database restart, pooled connections are dead; a checked pool replaces them instead of
failing the caller's first query) and that fails fast with :class:`DatabaseUnavailable`. Schema
migrations follow :mod:`hybrid_assistant.pg_schema`, shared with ``retrieval``.
"""

from __future__ import annotations

import logging

from psycopg_pool import ConnectionPool, PoolTimeout

from hybrid_assistant.pg_schema import redact

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5
# The pool's own reconnection backs off exponentially without a cap (1, 2, 4 ... s up to this
# timeout): after a long outage its next attempt could be minutes away. Giving up after 2 s
# instead hands reconnection to demand: the next caller that waits grows the pool at once.
RECONNECT_TIMEOUT_S = 2.0


class DatabaseUnavailable(RuntimeError):
    """The database cannot be reached (down, restarting, or the pool is exhausted)."""


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
