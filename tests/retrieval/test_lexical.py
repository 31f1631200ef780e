from __future__ import annotations

import sqlite3
from collections.abc import Callable

from hybrid_assistant.retrieval import Document, KnowledgeBase
from hybrid_assistant.retrieval.lexical import FTS_SCHEMA, match_expression, search


def test_match_expression_quotes_words_and_drops_stopwords() -> None:
    assert match_expression("What is the capital of France?") == '"capital" OR "france"'
    assert match_expression("the of") == '"the" OR "of"', "all-stopword queries keep their words"
    assert match_expression("?!") is None


def test_fts_syntax_in_queries_is_literal_text() -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE chunks (id INTEGER PRIMARY KEY, text TEXT)")
    conn.executescript(FTS_SCHEMA)
    conn.execute("INSERT INTO chunks VALUES (1, 'alpha NEAR beta'), (2, 'gamma delta')")
    for hostile in ['alpha" OR *', "NEAR(alpha beta)", "text:gamma", "-delta ^", "AND OR NOT"]:
        search(conn, hostile, 5)  # no FTS5 syntax error
    assert [chunk_id for chunk_id, _ in search(conn, 'text:gamma"', 5)] == [2]


def test_bm25_prefers_rarer_and_repeated_terms(open_kb: Callable[..., KnowledgeBase]) -> None:
    kb = open_kb()
    kb.ingest(
        [
            Document("common", "river boat river boat water water water"),
            Document("rare", "the axolotl swims in the river"),
            Document("none", "mountains and snow"),
        ]
    )
    hits = kb.search("axolotl river", top_k=3, mode="lexical")
    assert [h.document_id for h in hits] == ["rare", "common"]
    assert hits[0].score > hits[1].score > 0


def test_stemming_matches_word_forms(open_kb: Callable[..., KnowledgeBase]) -> None:
    kb = open_kb()
    kb.ingest([Document("d", "She was running and jumped over fences."), Document("e", "Quiet evening.")])
    assert [h.document_id for h in kb.search("runs jumping fence", top_k=2, mode="lexical")] == ["d"]
