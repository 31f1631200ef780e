"""Deciding what an ingest call changes: validation, content hashes, chunking.

Nothing here writes; the knowledge base embeds the planned chunks and applies the plan in one
transaction.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from retrieval.chunker import Chunk, Chunker
from retrieval.docstore import Docstore, metadata_json
from retrieval.types import Document

MAX_ID_LENGTH = 1024


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def document_problem(document: Document) -> str | None:
    """Why ``document`` cannot be ingested, or None."""
    doc_id = document.id
    if not isinstance(doc_id, str) or not doc_id.strip():
        return f"document id must be a non-empty string, got {doc_id!r}"
    if len(doc_id) > MAX_ID_LENGTH:
        return f"document id {doc_id[:40]!r}… is {len(doc_id)} characters long (at most {MAX_ID_LENGTH})"
    if not isinstance(document.text, str) or not document.text.strip():
        return f"document {doc_id!r} has no text"
    if not isinstance(document.source, str):
        return f"document {doc_id!r}: source must be a string, got {document.source!r}"
    for key, value in document.metadata.items():
        if not isinstance(key, str) or not key or not isinstance(value, str):
            return (
                f"document {doc_id!r}: metadata must map non-empty strings to strings, got {key!r}: {value!r}"
            )
    return None


@dataclass
class PlannedDocument:
    """A document whose stored state will change."""

    document: Document
    content_hash: str
    existed: bool
    # Empty when only metadata or source changed: the stored chunks and embeddings are kept.
    chunks: list[Chunk] = field(default_factory=list)
    rechunk: bool = True
    kept_chunks: int = 0


@dataclass
class IngestPlan:
    received: int = 0
    unchanged: int = 0
    errors: list[str] = field(default_factory=list)
    changes: list[PlannedDocument] = field(default_factory=list)

    @property
    def chunk_count(self) -> int:
        return sum(len(p.chunks) for p in self.changes)


def plan_ingest(documents: Iterable[Document], docstore: Docstore, chunker: Chunker) -> IngestPlan:
    """Validate, de-duplicate (the last copy of an id wins) and compare with the stored state."""
    plan = IngestPlan()
    latest: dict[str, Document] = {}
    for document in documents:
        plan.received += 1
        problem = document_problem(document)
        if problem:
            plan.errors.append(problem)
            continue
        if document.id in latest:
            plan.errors.append(f"document {document.id!r} appears more than once; the last copy was used")
        latest[document.id] = document
    for document in latest.values():
        digest = content_hash(document.text)
        state = docstore.document_state(document.id)
        if state is not None and state.content_hash == digest:
            if state.metadata_json == metadata_json(document.metadata) and state.source == document.source:
                plan.unchanged += 1
            else:
                plan.changes.append(
                    PlannedDocument(
                        document, digest, existed=True, rechunk=False, kept_chunks=state.chunk_count
                    )
                )
            continue
        plan.changes.append(
            PlannedDocument(document, digest, existed=state is not None, chunks=chunker.chunk(document.text))
        )
    return plan
