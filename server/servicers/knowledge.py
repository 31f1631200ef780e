"""The Knowledge service: Ingest and DeleteDocuments (admin), IndexStats, Retrieve."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import grpc

from hybrid_assistant.v1 import assistant_pb2 as pb
from hybrid_assistant.v1 import assistant_pb2_grpc as pb_grpc
from retrieval.types import Document, IngestSummary
from server import convert
from server.errors import InvalidArgument, grpc_errors
from server.knowledge import KnowledgeService, to_passage
from server.validation import Problem, Problems, check_min_score, check_top_k

# Streamed documents are committed in batches: each batch is atomic, and a broken stream
# keeps the batches committed before it (the response of a failed call is an error).
INGEST_BATCH = 256


def _add(total: IngestSummary, part: IngestSummary) -> IngestSummary:
    return IngestSummary(
        received=total.received + part.received,
        added=total.added + part.added,
        updated=total.updated + part.updated,
        unchanged=total.unchanged + part.unchanged,
        chunks_added=total.chunks_added + part.chunks_added,
        chunks_removed=total.chunks_removed + part.chunks_removed,
        errors=total.errors + part.errors,
    )


class KnowledgeServicer(pb_grpc.KnowledgeServicer):
    def __init__(self, knowledge: KnowledgeService, max_top_k: int) -> None:
        self._knowledge = knowledge
        self._max_top_k = max_top_k

    @grpc_errors
    async def Ingest(
        self, request_iterator: AsyncIterator[pb.IngestRequest], context: grpc.aio.ServicerContext
    ) -> pb.IngestResponse:
        total = IngestSummary()
        batch: list[Document] = []
        async for request in request_iterator:
            d = request.document
            batch.append(Document(id=d.id, text=d.text, metadata=dict(d.metadata), source=d.source))
            if len(batch) >= INGEST_BATCH:
                total = _add(total, await self._knowledge.ingest(batch))
                batch = []
        if batch:
            total = _add(total, await self._knowledge.ingest(batch))
        return pb.IngestResponse(
            received=total.received,
            added=total.added,
            updated=total.updated,
            unchanged=total.unchanged,
            chunks_added=total.chunks_added,
            chunks_removed=total.chunks_removed,
            errors=list(total.errors),
        )

    @grpc_errors
    async def DeleteDocuments(
        self, request: pb.DeleteDocumentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteDocumentsResponse:
        if not request.ids:
            raise InvalidArgument("ids is empty: name at least one document id")
        summary = await self._knowledge.delete(list(request.ids))
        return pb.DeleteDocumentsResponse(deleted=summary.deleted, not_found=list(summary.not_found))

    @grpc_errors
    async def IndexStats(
        self, request: pb.IndexStatsRequest, context: grpc.aio.ServicerContext
    ) -> pb.IndexStatsResponse:
        stats = await self._knowledge.stats()
        return pb.IndexStatsResponse(
            documents=stats.documents,
            chunks=stats.chunks,
            dimension=stats.dimension,
            index_type=stats.index_type,
            bytes_on_disk=stats.bytes_on_disk,
            embedder=stats.embedder,
            fingerprint=stats.fingerprint,
        )

    @grpc_errors
    async def Retrieve(
        self, request: pb.RetrieveRequest, context: grpc.aio.ServicerContext
    ) -> pb.RetrieveResponse:
        problems = Problems()
        if not request.query.strip():
            problems.add(Problem.EMPTY_QUERY)
        check_top_k(request.top_k, self._max_top_k, problems)
        check_min_score(request.min_score, problems)
        problems.raise_if_any()
        started = time.perf_counter()
        hits = await self._knowledge.search(
            request.query,
            request.top_k,
            convert.MODES.get(request.mode, ""),
            request.min_score,
            dict(request.metadata_filter),
        )
        return pb.RetrieveResponse(
            passages=[convert.passage_to_pb(to_passage(h)) for h in hits],
            took_ms=(time.perf_counter() - started) * 1000,
        )
