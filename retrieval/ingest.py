"""Deciding what an ingest call changes: validation, content hashes, chunking.

Nothing here writes; the knowledge base embeds the planned chunks and applies the plan in one
transaction.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from tqdm import tqdm

from hybrid_assistant.retrieval.chunker import Chunk, Chunker
from hybrid_assistant.retrieval.docstore import DocumentState, metadata_json
from hybrid_assistant.retrieval.embedder import Embedder, check_embeddings
from hybrid_assistant.retrieval.types import Document

# Bounds on one document; a document past them is skipped and named in the summary's errors.
MAX_ID_LENGTH = 1024
MAX_TEXT_CHARS = 10_000_000
MAX_SOURCE_CHARS = 4096
MAX_METADATA_KEYS = 128
MAX_METADATA_KEY_CHARS = 256
MAX_METADATA_VALUE_CHARS = 16_384
_ECHO = 200  # characters of a bad value quoted back


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _ECHO else f"{text[:_ECHO]}... ({len(text)} characters)"


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def document_problem(document: Document) -> str | None:
    """Why ``document`` cannot be ingested, or None (bad values are quoted cut short)."""
    doc_id = document.id
    if not isinstance(doc_id, str) or not doc_id.strip():
        return f"document id must be a non-empty string, got {_short(doc_id)}"
    if len(doc_id) > MAX_ID_LENGTH:
        return f"document id {doc_id[:40]!r}… is {len(doc_id)} characters long (at most {MAX_ID_LENGTH})"
    name = _short(doc_id)
    if not _encodable(doc_id):
        return f"document id {name} is not valid Unicode text (lone surrogates)"
    text = document.text
    if not isinstance(text, str) or not text.strip():
        return f"document {name} has no text"
    if len(text) > MAX_TEXT_CHARS:
        return f"document {name}: text is {len(text)} characters; at most {MAX_TEXT_CHARS}"
    if not _encodable(text):
        return f"document {name}: text is not valid Unicode (lone surrogates)"
    source = document.source
    if not isinstance(source, str) or len(source) > MAX_SOURCE_CHARS or not _encodable(source):
        return (
            f"document {name}: source must be a string of at most {MAX_SOURCE_CHARS} characters, "
            f"got {_short(source)}"
        )
    if len(document.metadata) > MAX_METADATA_KEYS:
        return f"document {name}: metadata has {len(document.metadata)} keys; at most {MAX_METADATA_KEYS}"
    for key, value in document.metadata.items():
        if (
            not isinstance(key, str)
            or not key
            or not isinstance(value, str)
            or len(key) > MAX_METADATA_KEY_CHARS
            or len(value) > MAX_METADATA_VALUE_CHARS
            or not _encodable(key)
            or not _encodable(value)
        ):
            return (
                f"document {name}: metadata must map strings of 1..{MAX_METADATA_KEY_CHARS} characters "
                f"to strings of at most {MAX_METADATA_VALUE_CHARS} characters, "
                f"got {_short(key)}: {_short(value)}"
            )
    return None


def _encodable(text: str) -> bool:
    """SQLite stores UTF-8: a lone surrogate (possible from Python callers, not from gRPC) fails."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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


class DocumentStates(Protocol):
    """Where the stored state of documents is looked up: the local docstore, or the shared store."""

    def document_state(self, document_id: str) -> DocumentState | None: ...


def plan_ingest(documents: Iterable[Document], docstore: DocumentStates, chunker: Chunker) -> IngestPlan:
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
            plan.errors.append(
                f"document {_short(document.id)} appears more than once; the last copy was used"
            )
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


def embed_plan(embedder: Embedder, plan: IngestPlan, batch_size: int, progress: bool = False) -> np.ndarray:
    """Embeddings of every planned chunk, in plan order (one row per chunk)."""
    texts = [chunk.text for change in plan.changes for chunk in change.chunks]
    out = np.empty((len(texts), embedder.dimension), dtype=np.float32)
    # Groups of several embedder batches: big enough for length-sorted batching inside the
    # embedder, small enough for a live progress bar.
    group = batch_size * 8
    with tqdm(total=len(texts), unit="chunk", desc="embedding", disable=not progress) as bar:
        for start in range(0, len(texts), group):
            part = texts[start : start + group]
            out[start : start + len(part)] = check_embeddings(embedder, embedder.embed(part), len(part))
            bar.update(len(part))
    return out
