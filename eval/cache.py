"""Answer cache: a re-run only asks the server what changed.

Keyed by a hash of everything that determines an answer: the arm, the item's content, the
decoding settings, and the fingerprints of the model, the adapter's weights and (for
retrieval arms) the knowledge index. SQLite, so an interrupted run keeps what it finished.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

from hybrid_assistant.eval.records import AnswerRecord


def cache_key(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class AnswerCache:
    def __init__(self, path: Path | None) -> None:
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(str(path), check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, record TEXT NOT NULL)"
            )
            self._conn.commit()

    def get(self, key: str) -> AnswerRecord | None:
        if self._conn is None:
            return None
        with self._lock:
            row = self._conn.execute("SELECT record FROM answers WHERE key = ?", (key,)).fetchone()
        return AnswerRecord.from_dict(json.loads(row[0])) if row else None

    def put(self, key: str, record: AnswerRecord) -> None:
        if self._conn is None or record.error is not None:  # never cache failures
            return
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO answers (key, record) VALUES (?, ?)",
                (key, json.dumps(record.to_dict())),
            )
            self._conn.commit()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
