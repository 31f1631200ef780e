from __future__ import annotations

import itertools
import random

import pytest

from hybrid_assistant.retrieval.chunker import Chunker, sentence_spans

WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "eta",
    "theta",
    "iota",
    "kappa",
    "lambda",
    "mu",
]


def random_text(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randint(1, 60)):
        sentence = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 30)))
        parts.append(sentence.capitalize() + rng.choice([".", "!", "?", ".\n", ".\n\n", "\n", ". "]) + " ")
    if rng.random() < 0.2:
        parts.append("x" * rng.randint(100, 700))  # one "sentence" with no space at all
    return "  " + "".join(parts)


@pytest.mark.parametrize(("size", "overlap"), [(80, 0), (120, 30), (300, 100), (1000, 999)])
def test_chunks_point_into_the_text_and_respect_limits(size: int, overlap: int) -> None:
    chunker = Chunker(size, overlap)
    rng = random.Random(size)
    for _ in range(150):
        text = random_text(rng)
        chunks = chunker.chunk(text)
        assert chunks, "non-blank text gives at least one chunk"
        for ordinal, chunk in enumerate(chunks):
            assert chunk.ordinal == ordinal
            assert text[chunk.start : chunk.end] == chunk.text
            assert 0 < len(chunk.text) <= size
            assert chunk.text == chunk.text.strip()
        for before, after in itertools.pairwise(chunks):
            assert before.start < after.start, "chunks move forward"
            assert after.start >= before.end - overlap, "overlap stays within the limit"
            assert not text[before.end : after.start].strip(), "no text falls between chunks"
        assert chunks[0].start == len(text) - len(text.lstrip())
        assert chunks[-1].end == len(text.rstrip())


def test_chunks_end_at_sentence_boundaries() -> None:
    text = "One two three. Four five six! Seven eight nine? Ten eleven twelve."
    chunks = Chunker(32, 0).chunk(text)
    assert [c.text for c in chunks] == [
        "One two three. Four five six!",
        "Seven eight nine?",
        "Ten eleven twelve.",
    ]


def test_overlap_repeats_whole_trailing_sentences() -> None:
    text = "Aa aa. Bb bb. Cc cc. Dd dd. Ee ee."
    chunks = Chunker(20, 7).chunk(text)
    assert [c.text for c in chunks] == ["Aa aa. Bb bb. Cc cc.", "Cc cc. Dd dd. Ee ee."]


def test_a_sentence_longer_than_a_chunk_is_cut_at_spaces() -> None:
    text = "word " * 50
    chunks = Chunker(42, 0).chunk(text)
    assert all(c.text.startswith("word") and c.text.endswith("word") for c in chunks)
    assert " ".join(c.text for c in chunks).split() == text.split()


def test_lines_and_closing_quotes() -> None:
    text = '# Title\nShe said "stop." Then left.\n- item one\n- item two'
    assert [text[s:e] for s, e in sentence_spans(text)] == [
        "# Title",
        'She said "stop."',
        "Then left.",
        "- item one",
        "- item two",
    ]


def test_blank_text_has_no_chunks() -> None:
    assert Chunker(100, 10).chunk("  \n\t ") == []
    assert Chunker(100, 10).chunk("") == []


@pytest.mark.parametrize(("size", "overlap"), [(0, 0), (10, 10), (10, -1)])
def test_invalid_sizes_are_rejected_with_the_value(size: int, overlap: int) -> None:
    with pytest.raises(ValueError, match=str(overlap if size > 0 else size)):
        Chunker(size, overlap)
