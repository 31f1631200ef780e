"""Plain data types that cross the package boundary (documents in, chunks and summaries out)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args

SearchMode = Literal["dense", "lexical", "hybrid"]
SEARCH_MODES: tuple[str, ...] = get_args(SearchMode)

IndexType = Literal["flat", "ivf", "hnsw"]
INDEX_TYPES: tuple[str, ...] = get_args(IndexType)


@dataclass(frozen=True)
class Document:
    """A document to ingest. ``id`` is the stable key for updates and deletes."""

    id: str
    text: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    source: str = ""


@dataclass(frozen=True)
class RetrievedChunk:
    """One search hit.

    ``score`` depends on the mode: cosine similarity (dense), BM25 (lexical, higher is better) or
    reciprocal-rank fusion scaled to (0, 1] (hybrid). ``start``/``end`` are character offsets of
    ``text`` in the document's original text.
    """

    document_id: str
    chunk_id: str
    score: float
    text: str
    metadata: Mapping[str, str]
    start: int
    end: int
    source: str = ""


@dataclass(frozen=True)
class IngestSummary:
    """What one ``ingest`` call did. ``errors`` name the documents that were skipped and why."""

    received: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    chunks_added: int = 0
    chunks_removed: int = 0
    errors: tuple[str, ...] = ()


@dataclass(frozen=True)
class DeleteSummary:
    """What one ``delete`` call did."""

    deleted: int = 0
    not_found: tuple[str, ...] = ()


@dataclass(frozen=True)
class IndexStats:
    """A snapshot of the knowledge base's size and identity."""

    documents: int
    chunks: int
    dimension: int
    index_type: str
    bytes_on_disk: int
    embedder: str
    fingerprint: str
