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
from hybrid_assistant.retrieval.ingest import embed_plan, plan_ingest
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
    docs = list(documents)
    for attempt in range(1, _ATTEMPTS + 1):
        ids = list(dict.fromkeys(d.id for d in docs if isinstance(d.id, str)))
        plan = plan_ingest(docs, StateLookup(store.document_states(ids)), chunker)
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


def delete_shared(store: SharedStore, ids: Iterable[str]) -> tuple[DeleteSummary, SharedWrite]:
    deleted, not_found, seq = store.delete(list(ids))
    logger.info("shared delete (change %d): %d documents; not found: %s", seq, deleted, not_found)
    return DeleteSummary(deleted, tuple(not_found)), SharedWrite(seq)
