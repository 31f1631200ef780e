"""The server's side of the knowledge index (:class:`KnowledgeIndex`): open it at warm-up, run its
blocking calls off the event loop, and turn search hits into prompt passages for
retrieval-augmented requests."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from hybrid_assistant.retrieval.knowledge_base import KnowledgeBase
from hybrid_assistant.retrieval.types import (
    DeleteSummary,
    Document,
    IndexStats,
    IngestSummary,
    RetrievedChunk,
    SearchMode,
)
from hybrid_assistant.server.errors import Unavailable
from hybrid_assistant.server.prompt import ContextPassage

if TYPE_CHECKING:
    from hybrid_assistant.retrieval.embedder import Embedder
    from hybrid_assistant.server.config import Settings
    from hybrid_assistant.server.core_types import RetrievalInput

log = logging.getLogger(__name__)


def index_dir(settings: Settings) -> Path:
    return settings.data_dir / "index"


def cache_dir(settings: Settings) -> Path:
    """The replica's cache of the shared knowledge store: a folder of its own, so that switching
    database_url on never turns a standalone index (``index/``) into a cache and drops documents."""
    return settings.data_dir / "knowledge-cache"


def make_embedder(settings: Settings) -> Embedder:
    from hybrid_assistant.retrieval.embedder import HashingEmbedder, SentenceTransformerEmbedder

    if settings.embedder == "hashing":
        return HashingEmbedder()
    batch = settings.retrieval.embed_batch_size
    return SentenceTransformerEmbedder(settings.embedder_path, batch_size=batch)


def open_knowledge_base(settings: Settings) -> KnowledgeBase:
    """Open the knowledge base with the configured embedder (blocking).

    With ``database_url`` set, PostgreSQL holds the documents and this replica keeps a local
    cache in the data dir that follows it in a background thread.
    """
    embedder = make_embedder(settings)
    if settings.database_url is not None:
        from hybrid_assistant.retrieval.replica_sync import ReplicaKnowledgeBase

        dsn = settings.database_url.get_secret_value()
        return ReplicaKnowledgeBase.open_replica(cache_dir(settings), embedder, dsn, settings.retrieval)
    return KnowledgeBase.open(index_dir(settings), embedder, settings.retrieval)


def to_passage(chunk: RetrievedChunk) -> ContextPassage:
    metadata = dict(chunk.metadata)
    if chunk.source:
        metadata.setdefault("source", chunk.source)
    return ContextPassage(chunk.document_id, chunk.chunk_id, chunk.score, chunk.text, metadata)


class KnowledgeIndex:
    """Async facade over :class:`KnowledgeBase` (whose calls are thread-safe but blocking).

    The transport-free core behind ``servicers.knowledge.KnowledgeServicer`` (its retrieval
    errors reach clients through ``server.errors``' table).
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._kb: KnowledgeBase | None = None

    async def open(self) -> None:
        self._kb = await asyncio.to_thread(open_knowledge_base, self._settings)

    async def close(self) -> None:
        if self._kb is not None:
            kb, self._kb = self._kb, None
            await asyncio.to_thread(kb.close)

    def _require(self) -> KnowledgeBase:
        if self._kb is None:
            raise Unavailable("the knowledge index is not open (server warming up, or disabled)")
        return self._kb

    def fingerprint(self) -> str:
        return self._kb.fingerprint if self._kb is not None else ""

    def embedder_name(self) -> str:
        return self._kb.stats().embedder if self._kb is not None else ""

    async def ingest(self, documents: Sequence[Document]) -> IngestSummary:
        return await asyncio.to_thread(self._require().ingest, documents)

    async def delete(self, ids: Sequence[str]) -> DeleteSummary:
        return await asyncio.to_thread(self._require().delete, ids)

    async def stats(self) -> IndexStats:
        return await asyncio.to_thread(self._require().stats)

    async def search(
        self,
        query: str,
        top_k: int | None,
        mode: str,
        min_score: float,
        metadata_filter: Mapping[str, str],
    ) -> list[RetrievedChunk]:
        kb = self._require()
        search_mode: SearchMode = mode or "hybrid"  # type: ignore[assignment]  # validated by search
        return await asyncio.to_thread(
            kb.search, query, top_k or None, search_mode, min_score, metadata_filter
        )

    async def passages(self, query: str, retrieval: RetrievalInput) -> list[ContextPassage]:
        """ContextSource for retrieval-augmented generation."""
        hits = await self.search(
            query, retrieval.top_k, retrieval.mode, retrieval.min_score, retrieval.metadata_filter
        )
        return [to_passage(hit) for hit in hits]
