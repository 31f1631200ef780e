"""The request log's writer: serving hands rows to a queue; one thread writes them in batches
through the store's :class:`~hybrid_assistant.server.experiments.log_store.LogWriter` (SQLite or
PostgreSQL).

:meth:`RequestLog.record` never blocks: it puts the row on a bounded queue and returns. When the
queue is full (the disk cannot keep up) the row is dropped, counted in :attr:`RequestLog.dropped`
and the Prometheus counter, and a warning is logged (at most every 10 s): serving is never
slowed by logging. The writer takes whatever has queued (up to ``batch_size`` rows) and commits
it as one transaction, so under load many rows share one commit. It also deletes rows past the
retention every ``retention_check_s``. When the database cannot be reached (PostgreSQL down or
restarting) the writer keeps its batch and retries; the queue absorbs what is served meanwhile,
rows past its bound are dropped and counted as above, and the log catches up once the database is
back. Rows stay visible through :meth:`pending` until committed,
so feedback on a request answered a moment ago finds it. :meth:`close` writes what is queued.

A row never replaces a stored row with the same request id (request ids are unique; serving
refuses a reused one): should one reach the writer anyway, it is dropped, counted in
:attr:`RequestLog.duplicates` and the Prometheus counter, and logged.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import TYPE_CHECKING

from prometheus_client import Counter

from hybrid_assistant.server.errors import Unavailable
from hybrid_assistant.server.experiments.store import LogRecord

if TYPE_CHECKING:
    from hybrid_assistant.server.experiments.log_store import LogStore, LogWriter
    from hybrid_assistant.server.experiments.settings import RequestLogSettings

log = logging.getLogger(__name__)

DROPPED = Counter("hybrid_assistant_request_log_dropped_total", "Request-log rows dropped (queue full)")
WRITTEN = Counter("hybrid_assistant_request_log_written_total", "Request-log rows committed")
DUPLICATES = Counter(
    "hybrid_assistant_request_log_duplicate_ids_total",
    "Request-log rows not written because a row with their request id was already stored",
)
_WARN_EVERY_S = 10.0
_RETRY_FIRST_S = 0.05
_RETRY_MAX_S = 1.0
_STOP = object()


class RequestLog:
    def __init__(self, db: LogStore, settings: RequestLogSettings) -> None:
        self.db = db
        self.settings = settings
        self.dropped = 0
        self.duplicates = 0
        self._queue: queue.Queue[object] = queue.Queue(maxsize=settings.queue_size)
        self._pending: dict[str, LogRecord] = {}
        self._lock = threading.Lock()
        self._last_warning = 0.0
        self._last_unavailable_warning = 0.0
        self._closing = threading.Event()  # wakes a retry wait; retries stop
        self._abandon = False  # set by the writer once closing met an unreachable database
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
        self._closing.set()
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            log.error("request log: writer stuck; %d queued rows are lost", self._queue.qsize())
            return
        self._thread.join(timeout)

    # ------------------------------------------------------------------ writer thread

    def _run(self) -> None:
        writer = self.db.writer()
        prune = self.settings.retention_days > 0
        next_prune = time.monotonic()
        try:
            while True:
                if prune and time.monotonic() >= next_prune:
                    self._prune(writer)
                    next_prune = time.monotonic() + self.settings.retention_check_s
                try:
                    wait = max(0.01, next_prune - time.monotonic()) if prune else None
                    first = self._queue.get(timeout=wait)
                except queue.Empty:
                    continue
                if not self._write_batch(writer, first):
                    return
        finally:
            writer.close()

    def _write_batch(self, writer: LogWriter, first: object) -> bool:
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
            self._commit(writer, batch)
        for marker in markers:
            marker.set()
        return keep_running

    def _commit(self, writer: LogWriter, batch: list[LogRecord]) -> None:
        """Write the batch. While the database is unreachable the batch is kept and retried
        (backing off to 1 s): the queue fills meanwhile and new rows are dropped and counted;
        once it is back, what was kept is written. Closing stops the retries (the rest is
        dropped, counted). Any other failure drops the batch, counted."""
        delay = _RETRY_FIRST_S
        try:
            while True:
                if self._abandon:
                    self._count_drop(len(batch))
                    return
                try:
                    result = writer.insert(batch)
                except Unavailable as exc:
                    if self._closing.is_set():
                        log.error("request log: closing with the database unreachable (%s)", exc)
                        self._abandon = True
                        continue
                    self._warn_unavailable(exc, len(batch))
                    self._closing.wait(delay)
                    delay = min(delay * 2, _RETRY_MAX_S)
                    continue
                except Exception:  # the writer thread must outlive a bad batch
                    log.exception("request log: cannot write %d rows", len(batch))
                    self._count_drop(len(batch))
                    return
                WRITTEN.inc(len(batch) - len(result.duplicates) - len(result.rejected))
                for request_id in result.duplicates:
                    self._count_duplicate(request_id)
                if result.rejected:
                    self._count_drop(len(result.rejected))
                return
        finally:
            with self._lock:
                for record in batch:
                    if self._pending.get(record.request_id) is record:
                        del self._pending[record.request_id]

    def _warn_unavailable(self, exc: Exception, rows: int) -> None:
        now = time.monotonic()
        if now - self._last_unavailable_warning >= _WARN_EVERY_S:
            self._last_unavailable_warning = now
            log.warning(
                "request log: database unreachable (%s); keeping %d rows and retrying, %d queued",
                exc,
                rows,
                self._queue.qsize(),
            )

    def _prune(self, writer: LogWriter) -> None:
        cutoff = time.time() - self.settings.retention_days * 86400
        try:
            deleted = writer.delete_before(cutoff)
        except Exception:  # retried at the next check
            log.exception("request log: retention delete failed")
            return
        if deleted:
            log.info("request log: deleted %d requests past %g days", deleted, self.settings.retention_days)
