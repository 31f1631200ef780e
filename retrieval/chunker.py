"""Split a document into overlapping chunks along sentence boundaries, keeping source offsets.

Sizes are in characters, not tokens: offsets stay exact, the chunker needs no tokenizer, and
the default of 800 characters keeps English chunks under MiniLM's 256-token window.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# A sentence ends after terminal punctuation (and any closing quotes or brackets) that is
# followed by whitespace, or at a line break (headings, list items, hard-wrapped lines).
_SENTENCE_END = re.compile(r"[.!?…]+[\"'”’)\]]*(?=\s)|\n")


@dataclass(frozen=True)
class Chunk:
    """A piece of a document: ``text == document_text[start:end]``."""

    ordinal: int
    text: str
    start: int
    end: int


def _trimmed(text: str, start: int, end: int) -> tuple[int, int] | None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if start < end else None


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` of each sentence or line, whitespace trimmed, in order."""
    spans = []
    position = 0
    for match in _SENTENCE_END.finditer(text):
        span = _trimmed(text, position, match.end())
        if span:
            spans.append(span)
        position = match.end()
    span = _trimmed(text, position, len(text))
    if span:
        spans.append(span)
    return spans


def _split_long(text: str, start: int, end: int, limit: int) -> list[tuple[int, int]]:
    """Cut a span longer than ``limit`` at the last whitespace that fits, or hard at ``limit``."""
    pieces = []
    while end - start > limit:
        window = text[start : start + limit + 1]
        cut = max(window.rfind(" "), window.rfind("\n"), window.rfind("\t"))
        cut_at = start + cut if cut > 0 else start + limit
        piece = _trimmed(text, start, cut_at)
        if piece:
            pieces.append(piece)
        start = cut_at
        while start < end and text[start].isspace():
            start += 1
    if start < end:
        pieces.append((start, end))
    return pieces


class Chunker:
    """Packs whole sentences into chunks of at most ``chunk_size`` characters.

    Consecutive chunks share the longest run of trailing sentences that fits in
    ``chunk_overlap`` characters (possibly none). A sentence longer than ``chunk_size`` is cut
    at word boundaries. Each chunk's offsets point into the original text, so
    ``text[chunk.start:chunk.end] == chunk.text``.
    """

    def __init__(self, chunk_size: int, chunk_overlap: int) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        if not 0 <= chunk_overlap < chunk_size:
            raise ValueError(f"chunk_overlap must be in [0, {chunk_size}), got {chunk_overlap}")
        self.chunk_size = chunk_size
        self.chunk_overlap = chunk_overlap

    def chunk(self, text: str) -> list[Chunk]:
        units: list[tuple[int, int]] = []
        for start, end in sentence_spans(text):
            units.extend(_split_long(text, start, end, self.chunk_size))
        chunks: list[Chunk] = []
        first = 0
        while first < len(units):
            last = first
            while last + 1 < len(units) and units[last + 1][1] - units[first][0] <= self.chunk_size:
                last += 1
            start, end = units[first][0], units[last][1]
            chunks.append(Chunk(len(chunks), text[start:end], start, end))
            if last + 1 == len(units):
                break
            # Step back over whole trailing sentences while they fit in the overlap, but always
            # move forward by at least one sentence so the loop ends.
            following = last + 1
            while following - 1 > first and end - units[following - 1][0] <= self.chunk_overlap:
                following -= 1
            first = following
        return chunks
