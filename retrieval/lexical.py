"""Lexical search with SQLite FTS5 (BM25), kept inside the docstore.

Why FTS5 rather than bm25s: the FTS5 table lives in the same SQLite file as the chunks and is
maintained by triggers, so every insert and delete is incremental and commits in the same
transaction as the docstore — atomic, crash-safe and never out of step with the dense index's
source of truth. bm25s builds a static index that must be rebuilt (O(corpus)) on every change
and persisted separately.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence

# External-content FTS5 table over chunks.text: the text is stored once (in chunks), triggers
# keep the inverted index in step with inserts and deletes.
FTS_SCHEMA = """
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(
    text, content='chunks', content_rowid='id', tokenize='porter unicode61 remove_diacritics 2'
);
CREATE TRIGGER IF NOT EXISTS chunks_fts_insert AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts(rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER IF NOT EXISTS chunks_fts_delete AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;
"""

_WORD = re.compile(r"\w+", re.UNICODE)
_MAX_TERMS = 64

# Function words match most chunks; leaving them out keeps BM25 ranking of an OR query cheap
# (FTS5 scores every matching row) without changing which chunks rank first.
_STOPWORD_TEXT = """a about above after again all am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has
    have having he her here hers herself him himself his how i if in into is it its itself just me
    more most my myself no nor not now of off on once only or other our ours ourselves out over own
    same she should so some such than that the their theirs them themselves then there these they
    this those through to too under until up very was we were what when where which while who whom
    why will with would you your yours yourself yourselves"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())


def query_words(query: str) -> list[str]:
    """The words a lexical query searches for: distinct, case-folded, stopwords out (unless the
    query has nothing else), at most 64."""
    words = list(dict.fromkeys(w.lower() for w in _WORD.findall(query)))
    content = [w for w in words if w not in STOPWORDS] or words
    return content[:_MAX_TERMS]


def match_expression(query: str) -> str | None:
    """An FTS5 MATCH expression: the query's words, each quoted, joined with OR.

    Quoting makes every word a literal term, so user text can never be parsed as FTS5 syntax
    (``AND``, ``NEAR``, ``*``, column filters). Returns None when the query has no words.
    """
    words = query_words(query)
    if not words:
        return None
    return " OR ".join(f'"{w}"' for w in words)


def search(
    conn: sqlite3.Connection,
    query: str,
    limit: int,
    restrict: tuple[str, Sequence[str]] | None = None,
) -> list[tuple[int, float]]:
    """Best ``limit`` chunks for ``query`` as ``(chunk_id, bm25)``, higher is better.

    ``restrict`` is ``(sql, params)`` of a subquery selecting the allowed chunk ids.
    """
    expression = match_expression(query)
    if expression is None:
        return []
    sql = "SELECT rowid, bm25(chunks_fts) FROM chunks_fts WHERE chunks_fts MATCH ?"
    params: list[object] = [expression]
    if restrict is not None:
        sql += f" AND rowid IN ({restrict[0]})"
        params.extend(restrict[1])
    sql += " ORDER BY bm25(chunks_fts) LIMIT ?"
    params.append(limit)
    # FTS5's bm25() is negative (more negative is better); flip it so higher is better everywhere.
    return [(int(rowid), -float(score)) for rowid, score in conn.execute(sql, params)]
