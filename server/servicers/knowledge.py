"""The Knowledge service: Ingest and DeleteDocuments (admin), IndexStats, Retrieve.

Hostile input gets INVALID_ARGUMENT, never INTERNAL: Retrieve's query and metadata filter and
DeleteDocuments' ids are bounded (``server.validation``); an Ingest stream message that does not
decode (not a protobuf, or a string that is not UTF-8) ends the call with INVALID_ARGUMENT,
keeping the batches committed before it; a document past the limits of
``retrieval.ingest`` is skipped and named in ``errors``, of which the first
``MAX_REPORTED_ERRORS`` are returned (the rest are counted). Protobuf conversions are in
``server.convert``; the core is ``server.knowledge.KnowledgeIndex``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator

import grpc

from hybrid_assistant.retrieval.types import Document, IngestSummary
from hybrid_assistant.server import convert
from hybrid_assistant.server.errors import InvalidArgument, grpc_errors
from hybrid_assistant.server.knowledge import KnowledgeIndex, to_passage
from hybrid_assistant.server.validation import (
    Problems,
    check_document_ids,
    check_metadata_filter,
    check_min_score,
    check_query,
    check_top_k,
)
from hybrid_assistant.v1 import assistant_pb2 as pb
from hybrid_assistant.v1 import assistant_pb2_grpc as pb_grpc

# Streamed documents are committed in batches: each batch is atomic, and a broken stream
# keeps the batches committed before it (the response of a failed call is an error).
INGEST_BATCH = 256
MAX_REPORTED_ERRORS = 100


def _add(total: IngestSummary, part: IngestSummary) -> IngestSummary:
    # Only the first errors are kept (a stream of a million bad documents must not build a
    # million-line answer); the response counts the rest (see Ingest).
    return IngestSummary(
        received=total.received + part.received,
        added=total.added + part.added,
        updated=total.updated + part.updated,
        unchanged=total.unchanged + part.unchanged,
        chunks_added=total.chunks_added + part.chunks_added,
        chunks_removed=total.chunks_removed + part.chunks_removed,
        errors=(total.errors + part.errors)[:MAX_REPORTED_ERRORS],
    )


class KnowledgeServicer(pb_grpc.KnowledgeServicer):
    def __init__(self, knowledge: KnowledgeIndex, max_top_k: int) -> None:
        self._knowledge = knowledge
        self._max_top_k = max_top_k

    @grpc_errors
    async def Ingest(
        self, request_iterator: AsyncIterator[pb.IngestRequest], context: grpc.aio.ServicerContext
    ) -> pb.IngestResponse:
        total = IngestSummary()
        error_count = 0
        batch: list[Document] = []
        async for request in request_iterator:  # undecodable messages: server.decode_guard
            batch.append(convert.document_from_pb(request.document))
            if len(batch) < INGEST_BATCH:
                continue
            part = await self._knowledge.ingest(batch)
            error_count, total, batch = error_count + len(part.errors), _add(total, part), []
        if batch:
            part = await self._knowledge.ingest(batch)
            error_count, total = error_count + len(part.errors), _add(total, part)
        if error_count > len(total.errors):
            more = f"and {error_count - len(total.errors)} more problems (documents skipped or merged)"
            total = dataclasses.replace(total, errors=(*total.errors, more))
        return convert.ingest_to_pb(total)

    @grpc_errors
    async def DeleteDocuments(
        self, request: pb.DeleteDocumentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteDocumentsResponse:
        if not request.ids:
            raise InvalidArgument("ids is empty: name at least one document id")
        problems = Problems()
        check_document_ids(request.ids, problems)
        problems.raise_if_any()
        return convert.delete_to_pb(await self._knowledge.delete(list(request.ids)))

    @grpc_errors
    async def IndexStats(
        self, request: pb.IndexStatsRequest, context: grpc.aio.ServicerContext
    ) -> pb.IndexStatsResponse:
        return convert.index_stats_to_pb(await self._knowledge.stats())

    @grpc_errors
    async def Retrieve(
        self, request: pb.RetrieveRequest, context: grpc.aio.ServicerContext
    ) -> pb.RetrieveResponse:
        problems = Problems()
        check_query(request.query, problems)
        check_top_k(request.top_k, self._max_top_k, problems)
        check_min_score(request.min_score, problems)
        check_metadata_filter(request.metadata_filter, problems, field="metadata_filter")
        problems.raise_if_any()
        started = time.perf_counter()
        hits = await self._knowledge.search(
            request.query,
            request.top_k,
            convert.MODES.get(request.mode, ""),
            request.min_score,
            dict(request.metadata_filter),
        )
        took_ms = (time.perf_counter() - started) * 1000
        return convert.retrieve_to_pb([to_passage(h) for h in hits], took_ms)
