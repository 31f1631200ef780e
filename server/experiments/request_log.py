"""The request log's writer: serving hands rows to a queue; one thread writes them in batches.

:meth:`RequestLog.record` never blocks: it puts the row on a bounded queue and returns. When the
queue is full (the disk cannot keep up) the row is dropped, counted in :attr:`RequestLog.dropped`
and the Prometheus counter, and a warning is logged (at most every 10 s): serving is never
slowed by logging. The writer takes whatever has queued (up to ``batch_size`` rows) and commits
it as one transaction, so under load many rows share one commit. It also deletes rows past the
retention every ``retention_check_s``. Rows stay visible through :meth:`pending` until committed,
so feedback on a request answered a moment ago finds it. :meth:`close` writes what is queued.

A row never replaces a stored row with the same request id (request ids are unique; serving
refuses a reused one): should one reach the writer anyway, it is dropped, counted in
:attr:`RequestLog.duplicates` and the Prometheus counter, and logged.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from typing import TYPE_CHECKING

from prometheus_client import Counter

from hybrid_assistant.server.experiments.store import LogDatabase, LogRecord, connect

if TYPE_CHECKING:
    from hybrid_assistant.server.experiments.settings import RequestLogSettings

log = logging.getLogger(__name__)

DROPPED = Counter("hybrid_assistant_request_log_dropped_total", "Request-log rows dropped (queue full)")
WRITTEN = Counter("hybrid_assistant_request_log_written_total", "Request-log rows committed")
DUPLICATES = Counter(
    "hybrid_assistant_request_log_duplicate_ids_total",
    "Request-log rows not written because a row with their request id was already stored",
)
_WARN_EVERY_S = 10.0
_STOP = object()


class RequestLog:
    def __init__(self, db: LogDatabase, settings: RequestLogSettings) -> None:
        self.db = db
        self.settings = settings
        self.dropped = 0
        self.duplicates = 0
        self._queue: queue.Queue[object] = queue.Queue(maxsize=settings.queue_size)
        self._pending: dict[str, LogRecord] = {}
        self._lock = threading.Lock()
        self._last_warning = 0.0
        self._thread = threading.Thread(target=self._run, name="request-log", daemon=True)
        self._started = False

    def start(self) -> None:
        self._thread.start()
        self._started = True

    # ------------------------------------------------------------------ serving side

    def record(self, record: LogRecord) -> None:
        """Queue a row for writing; never blocks (drops and counts when the queue is full, and
        when a row with the same request id is still queued: the first one is kept)."""
        with self._lock:
            duplicate = record.request_id in self._pending
            if not duplicate:
                self._pending[record.request_id] = record
        if duplicate:
            self._count_duplicate(record.request_id)
            return
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            with self._lock:
                if self._pending.get(record.request_id) is record:
                    del self._pending[record.request_id]
            self._count_drop(1)

    def pending(self, request_id: str) -> LogRecord | None:
        """The row for this id if it is queued but not yet committed."""
        with self._lock:
            return self._pending.get(request_id)

    def _count_duplicate(self, request_id: str) -> None:
        self.duplicates += 1
        DUPLICATES.inc()
        log.warning(
            "request log: a row for request id %r is already queued or stored; the new row is "
            "dropped and the first kept (request ids are unique)",
            request_id[:200],
        )

    def _count_drop(self, count: int) -> None:
        self.dropped += count
        DROPPED.inc(count)
        now = time.monotonic()
        if now - self._last_warning >= _WARN_EVERY_S:
            self._last_warning = now
            log.warning(
                "request log: %d rows dropped so far (queue of %d full or write failed); serving goes on",
                self.dropped,
                self.settings.queue_size,
            )

    # ------------------------------------------------------------------ control (blocking: call off the loop)

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything queued before this call is committed; False on timeout."""
        if not self._started or not self._thread.is_alive():
            return False
        done = threading.Event()
        try:
            self._queue.put(done, timeout=timeout)
        except queue.Full:
            return False
        return done.wait(timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, then stop the writer."""
        if not self._started:
            return
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            log.error("request log: writer stuck; %d queued rows are lost", self._queue.qsize())
            return
        self._thread.join(timeout)

    # ------------------------------------------------------------------ writer thread

    def _run(self) -> None:
        conn = connect(self.db.path, "NORMAL")
        prune = self.settings.retention_days > 0
        next_prune = time.monotonic()
        try:
            while True:
                if prune and time.monotonic() >= next_prune:
                    self._prune(conn)
                    next_prune = time.monotonic() + self.settings.retention_check_s
                try:
                    wait = max(0.01, next_prune - time.monotonic()) if prune else None
                    first = self._queue.get(timeout=wait)
                except queue.Empty:
                    continue
                if not self._write_batch(conn, first):
                    return
        finally:
            conn.close()

    def _write_batch(self, conn: sqlite3.Connection, first: object) -> bool:
        """Commit ``first`` and what else is queued; False once the stop marker is seen."""
        batch: list[LogRecord] = []
        markers: list[threading.Event] = []
        keep_running = True
        item: object = first
        while True:
            if item is _STOP:
                keep_running = False
            elif isinstance(item, threading.Event):
                markers.append(item)
            else:
                assert isinstance(item, LogRecord)
                batch.append(item)
            if not keep_running or len(batch) >= self.settings.batch_size:
                break
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
        if batch:
            self._commit(conn, batch)
        for marker in markers:
            marker.set()
        return keep_running

    def _commit(self, conn: sqlite3.Connection, batch: list[LogRecord]) -> None:
        try:
            ignored = LogDatabase.insert(conn, batch)
            WRITTEN.inc(len(batch) - len(ignored))
            for request_id in ignored:
                self._count_duplicate(request_id)
        except sqlite3.Error:
            log.exception("request log: cannot write %d rows", len(batch))
            self._count_drop(len(batch))
        finally:
            with self._lock:
                for record in batch:
                    if self._pending.get(record.request_id) is record:
                        del self._pending[record.request_id]

    def _prune(self, conn: sqlite3.Connection) -> None:
        cutoff = time.time() - self.settings.retention_days * 86400
        try:
            deleted = LogDatabase.delete_before(conn, cutoff)
        except sqlite3.Error:
            log.exception("request log: retention delete failed")
            return
        if deleted:
            log.info("request log: deleted %d requests past %g days", deleted, self.settings.retention_days)
