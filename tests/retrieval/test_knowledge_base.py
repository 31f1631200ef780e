"""The knowledge base contract, run against each index type, plus its errors and persistence."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from hybrid_assistant.retrieval import (
    Document,
    EmptyIndexError,
    HashingEmbedder,
    IncompatibleIndexError,
    IndexLockedError,
    InvalidQueryError,
    KnowledgeBase,
    RetrievalSettings,
)
from tests.retrieval.conftest import TOPICS, topic_documents

OpenKB = Callable[..., KnowledgeBase]

QUESTIONS = {
    "astronomy": "telescope galaxy quasar",
    "cooking": "bake dough in the oven",
    "sailing": "yacht mainsail jib",
    "botany": "orchid photosynthesis leaves",
    "finance": "interest rates inflation bank",
    "geology": "magma basalt granite crust",
}


@pytest.mark.parametrize("mode", ["dense", "lexical", "hybrid"])
def test_each_question_finds_its_topic(open_kb: OpenKB, index_type: str, mode: str) -> None:
    kb = open_kb(index_type)
    kb.ingest(topic_documents(copies=2))
    for topic, question in QUESTIONS.items():
        hits = kb.search(question, top_k=2, mode=mode)  # type: ignore[arg-type]
        assert {h.metadata["topic"] for h in hits} == {topic}, (mode, question, hits)
        assert hits[0].score >= hits[1].score


def test_hits_carry_text_offsets_metadata_and_source(open_kb: OpenKB, index_type: str) -> None:
    kb = open_kb(index_type)
    text = " ".join(f"Sentence {i} talks about item{i}." for i in range(40))
    kb.ingest([Document("long", text, {"kind": "list"}, "lists/long.txt")])
    hit = kb.search("item27", top_k=1, mode="lexical")[0]
    assert text[hit.start : hit.end] == hit.text
    assert "item27" in hit.text
    assert (hit.document_id, dict(hit.metadata), hit.source) == ("long", {"kind": "list"}, "lists/long.txt")
    assert hit.chunk_id.isdigit()


def test_reingest_unchanged_is_a_noop_and_changes_replace_chunks(open_kb: OpenKB, index_type: str) -> None:
    kb = open_kb(index_type)
    first = kb.ingest(topic_documents())
    assert (first.added, first.updated, first.unchanged, first.chunks_added) == (6, 0, 0, 6)
    fingerprint = kb.fingerprint
    again = kb.ingest(topic_documents())
    assert (again.added, again.updated, again.unchanged, again.chunks_added) == (0, 0, 6, 0)
    assert kb.fingerprint == fingerprint, "a no-op changes nothing"

    old_chunk = kb.search("yacht mainsail", top_k=1)[0].chunk_id
    changed = kb.ingest(
        [Document("sailing-0", "Sailing now covers catamarans and outriggers.", {"topic": "sailing"})]
    )
    assert (changed.updated, changed.chunks_added, changed.chunks_removed) == (1, 1, 1)
    assert kb.fingerprint != fingerprint
    hit = kb.search("catamarans outriggers", top_k=1)[0]
    assert hit.document_id == "sailing-0"
    assert hit.chunk_id != old_chunk
    assert all(h.chunk_id != old_chunk for h in kb.search("yacht mainsail jib", top_k=6, mode="dense"))
    assert kb.stats().chunks == 6


def test_metadata_only_change_keeps_chunks(open_kb: OpenKB) -> None:
    kb = open_kb()
    kb.ingest(topic_documents())
    before = kb.search("galaxy", top_k=1)[0]
    summary = kb.ingest([Document("astronomy-0", before.text, {"topic": "space"}, "new/source.txt")])
    assert (summary.updated, summary.chunks_added, summary.chunks_removed) == (1, 0, 0)
    after = kb.search("galaxy", top_k=1, metadata_filter={"topic": "space"})[0]
    assert (after.chunk_id, after.source) == (before.chunk_id, "new/source.txt")


def test_delete_by_id(open_kb: OpenKB, index_type: str) -> None:
    kb = open_kb(index_type)
    kb.ingest(topic_documents())
    summary = kb.delete(["cooking-0", "missing", "cooking-0"])
    assert (summary.deleted, summary.not_found) == (1, ("missing",))
    assert all(h.document_id != "cooking-0" for h in kb.search("bake dough oven", top_k=6))
    assert kb.stats().documents == 5
    assert kb.delete(["missing"]).deleted == 0
    kb.delete([f"{topic}-0" for topic in TOPICS if topic != "cooking"])
    with pytest.raises(EmptyIndexError, match="no documents"):
        kb.search("anything")


def test_metadata_filter_and_min_score(open_kb: OpenKB, index_type: str) -> None:
    kb = open_kb(index_type)
    kb.ingest(topic_documents(copies=3))
    for mode in ("dense", "lexical", "hybrid"):
        hits = kb.search("galaxy quasar", top_k=5, mode=mode, metadata_filter={"copy": "2"})  # type: ignore[arg-type]
        assert hits
        assert all(h.metadata["copy"] == "2" for h in hits)
        assert hits[0].metadata["topic"] == "astronomy"
    assert kb.search("galaxy", metadata_filter={"topic": "astronomy", "copy": "9"}) == []
    strict = kb.search("galaxy quasar", top_k=10, mode="dense", min_score=0.2)
    assert strict
    assert all(h.score >= 0.2 for h in strict)
    assert {h.metadata["topic"] for h in strict} == {"astronomy"}


def test_hybrid_fuses_dense_and_lexical(open_kb: OpenKB) -> None:
    kb = open_kb()
    kb.ingest(topic_documents())
    hybrid = kb.search("orchid photosynthesis", top_k=3, mode="hybrid")
    assert hybrid[0].document_id == "botany-0"
    assert hybrid[0].score == pytest.approx(1.0), "first in both lists scores 1"
    assert all(0 < h.score <= 1 for h in hybrid)
    # A word the hashing embedder sees but no chunk contains: hybrid still answers from dense.
    assert kb.search("zzzz", top_k=2, mode="lexical") == []
    assert len(kb.search("zzzz", top_k=2, mode="hybrid")) == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"query": "  "}, "query must be a non-empty string, got '  '"),
        ({"query": "q", "top_k": 0}, "top_k must be an integer from 1 to 100, got 0"),
        ({"query": "q", "top_k": 101}, "got 101"),
        ({"query": "q", "mode": "fuzzy"}, "mode must be one of dense, lexical, hybrid, got 'fuzzy'"),
        ({"query": "q", "min_score": float("nan")}, "min_score must be a finite number, got nan"),
        ({"query": "q", "metadata_filter": {"": "x"}}, "got '': 'x'"),
    ],
)
def test_invalid_queries_are_rejected_with_the_value(open_kb: OpenKB, kwargs: dict, message: str) -> None:
    kb = open_kb()
    kb.ingest(topic_documents())
    with pytest.raises(InvalidQueryError) as caught:
        kb.search(**kwargs)
    assert message in str(caught.value)


def test_empty_index_is_a_precondition_error(open_kb: OpenKB) -> None:
    with pytest.raises(EmptyIndexError):
        open_kb().search("hello")


def test_invalid_documents_are_reported_and_the_rest_ingested(open_kb: OpenKB) -> None:
    kb = open_kb()
    summary = kb.ingest(
        [
            Document("", "no id"),
            Document("blank", "   "),
            Document("meta", "text", {"k": 1}),  # type: ignore[dict-item]
            Document("dup", "first"),
            Document("dup", "second copy wins"),
            Document("ok", "fine text"),
        ]
    )
    assert (summary.received, summary.added) == (6, 2)
    assert summary.errors == (
        "document id must be a non-empty string, got ''",
        "document 'blank' has no text",
        "document 'meta': metadata must map strings of 1..256 characters to strings of at most 16384 "
        "characters, got 'k': 1",
        "document 'dup' appears more than once; the last copy was used",
    )
    assert kb.search("second copy", top_k=1, mode="lexical")[0].document_id == "dup"


def test_state_survives_reopen_and_stats_describe_it(
    open_kb: OpenKB, index_type: str, tmp_path: Path
) -> None:
    kb = open_kb(index_type)
    kb.ingest(topic_documents(copies=40))  # 240 chunks: IVF is trained
    kb.delete(["finance-3"])
    before = [h.chunk_id for h in kb.search("galaxy telescope", top_k=5, mode="dense")]
    stats = kb.stats()
    assert (stats.documents, stats.chunks, stats.dimension, stats.index_type) == (239, 239, 256, index_type)
    assert stats.embedder == "hashing-256"
    assert stats.bytes_on_disk > 0
    assert len(stats.fingerprint) == 16
    kb.close()
    kb.close()  # idempotent
    reopened = open_kb(index_type)
    assert reopened.stats().fingerprint == stats.fingerprint
    assert [h.chunk_id for h in reopened.search("galaxy telescope", top_k=5, mode="dense")] == before
    with pytest.raises(RuntimeError, match="closed"):
        kb.search("galaxy")


def test_stale_index_file_is_reconciled_without_reembedding(open_kb: OpenKB, tmp_path: Path) -> None:
    kb = open_kb()
    kb.ingest(topic_documents())
    stale = next((tmp_path / "kb").glob("vectors-*.faiss")).read_bytes()
    kb.ingest([Document("new", "Volcanoes erupt lava.")])
    kb.delete(["cooking-0"])
    kb.close()
    for path in (tmp_path / "kb").glob("vectors-*.faiss"):
        path.unlink()
    (tmp_path / "kb" / "vectors-g1-flat.faiss").write_bytes(stale)  # as if saving had crashed

    class CountingEmbedder(HashingEmbedder):
        texts = 0

        def embed(self, texts: list[str]) -> np.ndarray:
            CountingEmbedder.texts += len(texts)
            return super().embed(texts)

    reopened = KnowledgeBase.open(tmp_path / "kb", CountingEmbedder(256), RetrievalSettings(chunk_size=200))
    try:
        assert CountingEmbedder.texts == 0, "nothing re-embedded"
        assert reopened.search("volcanoes lava", top_k=1, mode="dense")[0].document_id == "new"
        assert all(h.document_id != "cooking-0" for h in reopened.search("bake dough", top_k=6, mode="dense"))
        assert [p.name for p in (tmp_path / "kb").glob("vectors-*.faiss")] == ["vectors-g3-flat.faiss"]
    finally:
        reopened.close()


def test_changing_index_type_rebuilds_from_stored_embeddings(open_kb: OpenKB) -> None:
    kb = open_kb("flat")
    kb.ingest(topic_documents(copies=40))
    expected = kb.search("magma basalt", top_k=3, mode="dense")[0].document_id
    kb.close()
    hnsw = open_kb("hnsw")
    assert hnsw.stats().index_type == "hnsw"
    assert hnsw.search("magma basalt", top_k=3, mode="dense")[0].document_id == expected


def test_ivf_trains_when_enough_vectors_arrive(open_kb: OpenKB) -> None:
    kb = open_kb("ivf")
    kb.ingest(topic_documents(copies=10))
    assert not kb._index.trained
    kb.ingest(topic_documents(copies=40))
    assert kb._index.trained
    assert kb.search("yacht mainsail", top_k=1, mode="dense")[0].metadata["topic"] == "sailing"


def test_hnsw_compacts_after_many_deletions(open_kb: OpenKB) -> None:
    kb = open_kb("hnsw")
    kb.ingest(topic_documents(copies=10))
    kb.delete([f"cooking-{i}" for i in range(10)])
    assert kb._index.stored == 60
    assert kb._index.live == 50
    kb.delete([f"finance-{i}" for i in range(5)])
    assert kb._index.stored == kb._index.live == 45, "more than a fifth masked: rebuilt"
    assert kb.search("interest rates", top_k=1, mode="dense")[0].document_id.startswith("finance-")


def test_a_second_open_is_refused_while_the_directory_is_locked(open_kb: OpenKB, tmp_path: Path) -> None:
    open_kb().ingest(topic_documents())
    with pytest.raises(IndexLockedError, match="open in another process"):
        KnowledgeBase.open(tmp_path / "kb", HashingEmbedder(256))


def test_embedder_mismatch_is_refused(open_kb: OpenKB, tmp_path: Path) -> None:
    kb = open_kb()
    kb.ingest(topic_documents())
    kb.close()
    with pytest.raises(IncompatibleIndexError, match=r"'hashing-256' \(dimension 256\), not 'hashing-128'"):
        KnowledgeBase.open(tmp_path / "kb", HashingEmbedder(128))
    KnowledgeBase.open(tmp_path / "kb", HashingEmbedder(256)).close()  # the lock was released


def test_hostile_documents_are_skipped_with_short_errors(open_kb: OpenKB) -> None:
    from hybrid_assistant.retrieval.ingest import MAX_METADATA_KEYS, MAX_TEXT_CHARS

    kb = open_kb()
    huge = "z" * 100_000
    bad = [
        Document("big", "word " * (MAX_TEXT_CHARS // 5 + 1)),
        Document("surrogate-text", "bad \udc80 text"),
        Document("surrogate\udc80id", "text"),
        Document("meta-keys", "text", {f"k{i}": "v" for i in range(MAX_METADATA_KEYS + 1)}),
        Document("meta-value", "text", {"k": huge}),
        Document("meta-surrogate", "text", {"k": "\ud800"}),
        Document("source", "text", source=huge),
        Document(huge, "text"),
    ]
    summary = kb.ingest([*bad, Document("fine", "Barley and oats grow in the north field.")])
    assert (summary.received, summary.added, len(summary.errors)) == (9, 1, 8), summary.errors
    assert all(len(error) < 600 for error in summary.errors), summary.errors
    assert kb.stats().documents == 1


def test_metadata_filters_are_bounded_below_sqlites_term_limit(open_kb: OpenKB) -> None:
    from hybrid_assistant.retrieval.search import (
        MAX_FILTER_KEY_LENGTH,
        MAX_FILTER_KEYS,
        MAX_FILTER_VALUE_LENGTH,
    )
    from hybrid_assistant.server import validation

    # The server checks requests against the same bounds before they reach the index.
    assert (MAX_FILTER_KEYS, MAX_FILTER_KEY_LENGTH, MAX_FILTER_VALUE_LENGTH) == (
        validation.MAX_METADATA_FILTER_KEYS,
        validation.MAX_METADATA_KEY_CHARS,
        validation.MAX_METADATA_VALUE_CHARS,
    )
    kb = open_kb()
    kb.ingest([Document("d", "Barley grows in the north field.", {f"k{i}": "v" for i in range(40)})])
    widest = {f"k{i}": "v" for i in range(MAX_FILTER_KEYS)}
    for mode in ("dense", "lexical", "hybrid"):
        assert [h.document_id for h in kb.search("barley", mode=mode, metadata_filter=widest)] == ["d"]  # type: ignore[arg-type]
    # 600 keys used to reach SQLite: "too many terms in compound SELECT" (an INTERNAL error).
    with pytest.raises(InvalidQueryError, match=f"has 600 keys; at most {MAX_FILTER_KEYS}"):
        kb.search("barley", metadata_filter={f"k{i}": "v" for i in range(600)})
    with pytest.raises(InvalidQueryError) as info:
        kb.search("barley", metadata_filter={"k" * 100_000: "v"})
    assert len(str(info.value)) < 1000
