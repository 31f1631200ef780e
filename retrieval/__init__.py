"""Retrieval: chunk, embed and index documents; search them densely, lexically or both.

The server uses ``KnowledgeBase`` and the types re-exported here; nothing in this package
imports ``server``.
"""

from __future__ import annotations

# A checkout's root also makes this folder importable as `retrieval`; under two names every module
# would load twice (two registries, two Prometheus collectors), so only the installed name works.
if __name__ != "hybrid_assistant.retrieval":
    raise ImportError(f"import hybrid_assistant.retrieval, not {__name__}")

from hybrid_assistant.retrieval.embedder import Embedder, HashingEmbedder, SentenceTransformerEmbedder
from hybrid_assistant.retrieval.errors import (
    CorruptIndexError,
    EmbedderError,
    EmptyIndexError,
    IncompatibleIndexError,
    IndexLockedError,
    InvalidQueryError,
    RetrievalError,
)
from hybrid_assistant.retrieval.knowledge_base import KnowledgeBase
from hybrid_assistant.retrieval.loaders import DocumentLoader, LoadProblem, LoadResult, load_documents
from hybrid_assistant.retrieval.settings import RetrievalSettings
from hybrid_assistant.retrieval.types import (
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
