"""The in-memory lexical index: FTS5's ranking, in step with the docstore's transactions."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from hybrid_assistant.retrieval import lexical
from hybrid_assistant.retrieval.knowledge_base import KnowledgeBase
from hybrid_assistant.retrieval.lexical_index import LexicalIndex, Tokenizer
from hybrid_assistant.retrieval.loaders import load_documents
from hybrid_assistant.retrieval.types import Document

DEMO = Path(__file__).resolve().parents[2] / "eval" / "data" / "demo"


def _fts5(kb: KnowledgeBase, query: str, limit: int) -> list[tuple[int, float]]:
    with kb._docstore.reading() as conn:
        return lexical.search(conn, query, limit)


def _memory(kb: KnowledgeBase, query: str, limit: int) -> list[tuple[int, float]]:
    return kb._docstore.lexical.search(lexical.query_words(query), limit)


def test_ranks_the_demo_questions_as_fts5_does(open_kb: Callable[..., KnowledgeBase]) -> None:
    kb = open_kb()
    kb.ingest(load_documents([DEMO / "kb"]).documents)
    questions = [
        json.loads(line)["question"]
        for name in ("test.jsonl", "control.jsonl", "unanswerable.jsonl")
        for line in (DEMO / name).read_text().splitlines()
        if line.strip()
    ]
    assert len(questions) > 50
    for question in questions:
        want = _fts5(kb, question, 10)
        got = _memory(kb, question, 10)
        assert [i for i, _ in got] == [i for i, _ in want], question
        assert [s for _, s in got] == pytest.approx([s for _, s in want], rel=1e-6), question


def test_tokens_fold_case_and_diacritics_and_stem_like_fts5_porter() -> None:
    tokenizer = Tokenizer()
    assert tokenizer.terms("Café RUNNING runs, naïve_test 42") == ["cafe", "run", "run", "naiv", "test", "42"]


def test_follows_commits_and_forgets_rollbacks(open_kb: Callable[..., KnowledgeBase]) -> None:
    kb = open_kb()
    kb.ingest(
        [Document(id="a", text="The heron fishes at dawn."), Document(id="b", text="Owls hunt at night.")]
    )
    assert [kb.search("heron", mode="lexical")[0].document_id] == ["a"]
    kb.ingest([Document(id="a", text="The crane waits at dusk.")])  # replaced: old chunks removed
    assert kb.search("heron", mode="lexical") == []
    assert kb.search("crane", mode="lexical")[0].document_id == "a"
    kb.delete(["b"])
    assert kb.search("owls", mode="lexical") == []
    store = kb._docstore
    store.begin()
    store.delete_chunks("a")
    store.rollback()  # never committed: the index must still find it
    assert kb.search("crane", mode="lexical")[0].document_id == "a"
    assert len(store.lexical) == kb.stats().chunks


def test_rebuilt_on_open_and_filtered_by_metadata(
    open_kb: Callable[..., KnowledgeBase], tmp_path: Path
) -> None:
    kb = open_kb(directory=tmp_path / "kb2")
    kb.ingest(
        [
            Document(id="x", text="Lanterns light the harbour.", metadata={"lang": "en"}),
            Document(id="y", text="Lanterns line the harbour wall.", metadata={"lang": "fr"}),
        ]
    )
    kb.close()
    reopened = open_kb(directory=tmp_path / "kb2")
    assert {h.document_id for h in reopened.search("lanterns", mode="lexical")} == {"x", "y"}
    filtered = reopened.search("lanterns", mode="lexical", metadata_filter={"lang": "fr"})
    assert [h.document_id for h in filtered] == ["y"]
    assert reopened.search("lanterns", mode="hybrid", metadata_filter={"lang": "en"})[0].document_id == "x"


def test_compaction_keeps_rankings() -> None:
    index = LexicalIndex()
    index.add((i, f"word{i % 7} common filler {i}") for i in range(3000))
    before = index.search(["word3", "filler"], 20)
    index.remove(range(0, 3000, 2))  # more than half dead: compacted
    after = index.search(["word3", "filler"], 20)
    assert len(index) == 1500 and all(i % 2 for i, _ in after)
    assert {i for i, _ in before if i % 2} <= {i for i, _ in index.search(["word3", "filler"], 3000)}
    assert index.search(["nothing"], 5) == [] and index.search([], 5) == []


def test_hostile_queries_answer_normally(open_kb: Callable[..., KnowledgeBase]) -> None:
    kb = open_kb()
    kb.ingest([Document(id="a", text="The heron fishes at dawn near the ferry.")])
    hostile = [
        " ".join(f"w{i}" for i in range(20_000)),  # far past the 64-term cap
        'e\u0301\u0301\u0301 \u202e\u200b \ud7ff \U0001f600 \x00 NEAR AND OR * "',  # marks, controls, syntax
        "the and of to",  # stopwords only: searched as they are, as FTS5 is
        "___ --- ...",  # no words at all
    ]
    for query in hostile:
        for mode in ("lexical", "hybrid"):
            kb.search(query, mode=mode)  # type: ignore[arg-type]
    assert kb.search("heron", mode="lexical")[0].document_id == "a"
