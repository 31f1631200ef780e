"""Retrieval: chunk, embed and index documents; search them densely, lexically or both.

The server uses ``KnowledgeBase`` and the types re-exported here; nothing in this package
imports ``server``.
"""

from __future__ import annotations

from retrieval.embedder import Embedder, HashingEmbedder, SentenceTransformerEmbedder
from retrieval.errors import (
    CorruptIndexError,
    EmbedderError,
    EmptyIndexError,
    IncompatibleIndexError,
    IndexLockedError,
    InvalidQueryError,
    RetrievalError,
)
from retrieval.knowledge_base import KnowledgeBase
from retrieval.loaders import DocumentLoader, LoadProblem, LoadResult, load_documents
from retrieval.settings import RetrievalSettings
from retrieval.types import (
    DeleteSummary,
    Document,
    IndexStats,
    IngestSummary,
    RetrievedChunk,
    SearchMode,
)

__all__ = [
    "CorruptIndexError",
    "DeleteSummary",
    "Document",
    "DocumentLoader",
    "Embedder",
    "EmbedderError",
    "EmptyIndexError",
    "HashingEmbedder",
    "IncompatibleIndexError",
    "IndexLockedError",
    "IndexStats",
    "IngestSummary",
    "InvalidQueryError",
    "KnowledgeBase",
    "LoadProblem",
    "LoadResult",
    "RetrievalError",
    "RetrievalSettings",
    "RetrievedChunk",
    "SearchMode",
    "SentenceTransformerEmbedder",
    "load_documents",
]
