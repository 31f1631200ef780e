"""The real default embedder (all-MiniLM-L6-v2) end to end: paraphrased questions find the
passage that answers them. Marked slow: loading the model and embedding take seconds."""

from __future__ import annotations

from pathlib import Path

import pytest

from hybrid_assistant.retrieval import (
    KnowledgeBase,
    RetrievalSettings,
    SentenceTransformerEmbedder,
    load_documents,
)

pytestmark = pytest.mark.slow

FACTS = {
    "zorbium.md": "# Zorbium\nZorbium is a fictional metal mined on the island of Kelvara. "
    "It melts at 412 degrees Celsius and is used to make lightweight bicycle frames.",
    "vantor.md": "# The Vantor Festival\nThe Vantor festival is held every April in the town of Melby. "
    "Visitors release paper lanterns over the river to celebrate the end of winter.",
    "qelp.md": "# Qelp birds\nThe qelp is a small blue bird that nests in cliffs. "
    "It eats mostly beetles and can dive into the sea to catch shrimp.",
    "orvan.md": "# Orvan Bank policy\nOrvan Bank charges no fee for international transfers under 500 euros. "
    "Larger transfers cost one percent of the amount.",
}

QUESTIONS = {
    "At what temperature does zorbium become liquid?": "zorbium.md",
    "When does the lantern celebration in Melby happen?": "vantor.md",
    "What food does the little blue cliff bird eat?": "qelp.md",
    "How much does it cost to send money abroad?": "orvan.md",
}


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    root.mkdir()
    for name, text in FACTS.items():
        (root / name).write_text(text, encoding="utf-8")
    return root


@pytest.mark.parametrize("mode", ["dense", "hybrid"])
def test_paraphrased_questions_find_their_passage(
    minilm: SentenceTransformerEmbedder, corpus: Path, tmp_path: Path, mode: str
) -> None:
    loaded = load_documents([corpus])
    assert not loaded.problems
    with KnowledgeBase.open(tmp_path / "kb", minilm, RetrievalSettings()) as kb:
        summary = kb.ingest(loaded.documents, progress=True)
        assert summary.added == len(FACTS)
        for question, expected in QUESTIONS.items():
            hits = kb.search(question, top_k=2, mode=mode)  # type: ignore[arg-type]
            assert hits[0].document_id == expected, (question, [(h.document_id, h.score) for h in hits])
        stats = kb.stats()
        assert (stats.dimension, stats.embedder) == (384, "sentence-transformers/all-MiniLM-L6-v2")


def test_dense_scores_are_cosines_and_reopen_keeps_answers(
    minilm: SentenceTransformerEmbedder, corpus: Path, tmp_path: Path
) -> None:
    with KnowledgeBase.open(tmp_path / "kb", minilm) as kb:
        kb.ingest(load_documents([corpus]).documents)
        first = kb.search("Which metal is used for bike frames?", top_k=4, mode="dense")
    assert first[0].document_id == "zorbium.md"
    assert 0.3 < first[0].score <= 1.0
    assert first[0].score > first[1].score
    with KnowledgeBase.open(tmp_path / "kb", minilm) as kb:
        again = kb.search("Which metal is used for bike frames?", top_k=4, mode="dense")
    assert [(h.chunk_id, round(h.score, 5)) for h in again] == [
        (h.chunk_id, round(h.score, 5)) for h in first
    ]
