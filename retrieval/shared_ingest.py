"""Ingest into the shared store: plan against the shared state, embed here, write in one transaction.

Used by a replica (which then applies the change to its own cache at once) and by the offline CLI
(which needs no cache at all). The plan compares with the shared state rather than a replica's
cache, which may be seconds behind.

Concurrent ingests of one document id on two replicas: each writes its whole version under the
store's write lock, so the later commit (the higher change sequence) replaces the earlier one's
document row and chunks entirely — last writer wins by sequence — and every replica converges on
it by applying the changes in sequence order. The one plan that depends on the stored text (a
metadata-only update keeps the stored chunks) is checked again under the lock, and planned
afresh when another writer changed the text in between.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from hybrid_assistant.retrieval.chunker import Chunker
from hybrid_assistant.retrieval.embedder import Embedder
from hybrid_assistant.retrieval.errors import SharedStoreUnavailableError
from hybrid_assistant.retrieval.ingest import document_problem, embed_plan, plan_ingest
from hybrid_assistant.retrieval.shared_store import SharedStore, StateLookup, WriteConflict
from hybrid_assistant.retrieval.types import DeleteSummary, Document, IngestSummary

logger = logging.getLogger(__name__)

_ATTEMPTS = 5


@dataclass(frozen=True)
class SharedWrite:
    """What one write did, and the change sequence it committed at (0: nothing written)."""

    seq: int


def ingest_shared(
    store: SharedStore,
    embedder: Embedder,
    chunker: Chunker,
    documents: Iterable[Document],
    batch_size: int,
    progress: bool = False,
) -> tuple[IngestSummary, SharedWrite]:
    """Add new documents, replace changed ones, skip unchanged ones; one transaction."""
    received = 0
    rejected: list[str] = []
    docs: list[Document] = []
    for document in documents:  # invalid ones never reach a query (a lone surrogate cannot be sent)
        received += 1
        problem = document_problem(document) or _nul_problem(document)
        if problem:
            rejected.append(problem)
        else:
            docs.append(document)
    for attempt in range(1, _ATTEMPTS + 1):
        ids = list(dict.fromkeys(d.id for d in docs))
        plan = plan_ingest(docs, StateLookup(store.document_states(ids)), chunker)
        plan.received, plan.errors = received, [*rejected, *plan.errors]
        if not plan.changes:
            summary = IngestSummary(
                received=plan.received, unchanged=plan.unchanged, errors=tuple(plan.errors)
            )
            return summary, SharedWrite(0)
        vectors = embed_plan(embedder, plan, batch_size, progress)
        try:
            counts = store.write_ingest(plan, vectors, embedder.name, embedder.dimension)
        except WriteConflict as conflict:
            logger.info(
                "document %r changed during ingest (attempt %d); planning again", str(conflict), attempt
            )
            continue
        summary = IngestSummary(
            received=plan.received,
            added=counts.added,
            updated=counts.updated,
            unchanged=plan.unchanged,
            chunks_added=counts.chunks_added,
            chunks_removed=counts.chunks_removed,
            errors=tuple(plan.errors),
        )
        logger.info("shared ingest (change %d): %s", counts.seq, summary)
        return summary, SharedWrite(counts.seq)
    raise SharedStoreUnavailableError(
        f"documents kept changing under concurrent writers; gave up after {_ATTEMPTS} attempts: retry"
    )


def _nul_problem(document: Document) -> str | None:
    """PostgreSQL text cannot hold NUL characters (SQLite can): name such a document, skip it."""
    fields = [document.id, document.text, document.source, *document.metadata, *document.metadata.values()]
    if any("\x00" in field for field in fields):
        return (
            f"document {document.id[:200]!r}: contains a NUL character (\\x00), "
            "which PostgreSQL text cannot store"
        )
    return None


def _storable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: possible from Python callers, not from gRPC
        return False
    return "\x00" not in text


def delete_shared(store: SharedStore, ids: Iterable[str]) -> tuple[DeleteSummary, SharedWrite]:
    wanted = list(dict.fromkeys(ids))
    # An id PostgreSQL cannot store is not there (and a query with it would be refused).
    deleted, missing, seq = store.delete([i for i in wanted if _storable(i)])
    gone = set(wanted) - set(missing)
    not_found = [i for i in wanted if i not in gone or not _storable(i)]
    logger.info("shared delete (change %d): %d documents; not found: %s", seq, deleted, not_found)
    return DeleteSummary(deleted, tuple(not_found)), SharedWrite(seq)
