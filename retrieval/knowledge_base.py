"""``KnowledgeBase``: documents in, ranked chunks out — the one object the server talks to.

Persistence: SQLite (``docstore.sqlite3``) is the source of truth and stores every chunk's
embedding; each ``ingest``/``delete`` call is one transaction. The FAISS index is a cache of
those embeddings, saved atomically with the docstore generation it reflects in its file name.
On open the cache's ids are reconciled with the docstore's (ids are never reused and a chunk's
embedding never changes, so the id difference is the whole difference); a missing or
incompatible cache is rebuilt from the stored embeddings, never by re-embedding. A crash at any
point therefore leaves the last committed state. (With a shared PostgreSQL store, this class is
the replica's cache and PostgreSQL the source of truth: see ``replica_sync``.)

Concurrency: writers (ingest, delete) are serialised by a mutex and do their slow work —
chunking, embedding, SQL inserts, index rebuilds — without blocking searches. Only the commit
and the in-memory index edit run under the write side of a readers-writer lock; each search
runs its index lookup and docstore reads under the read side, so it sees one committed state.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO

import numpy as np

from hybrid_assistant.retrieval.chunker import Chunker
from hybrid_assistant.retrieval.directory import directory_size, lock_directory, record_embedder
from hybrid_assistant.retrieval.docstore import Docstore
from hybrid_assistant.retrieval.embedder import Embedder, check_embeddings
from hybrid_assistant.retrieval.errors import EmptyIndexError
from hybrid_assistant.retrieval.index_cache import UNSAVED, build_from_docstore, load_index
from hybrid_assistant.retrieval.ingest import IngestPlan, embed_plan, plan_ingest
from hybrid_assistant.retrieval.rwlock import ReadWriteLock
from hybrid_assistant.retrieval.search import SearchRequest, rank, rank_lexical, validate_search
from hybrid_assistant.retrieval.settings import RetrievalSettings
from hybrid_assistant.retrieval.types import (
    DeleteSummary,
    Document,
    IndexStats,
    IngestSummary,
    RetrievedChunk,
    SearchMode,
)
from hybrid_assistant.retrieval.vector_index import VectorIndex

logger = logging.getLogger(__name__)

DOCSTORE_FILE = "docstore.sqlite3"
# Save the index after a write when it is small, or once this share of it changed since the
# last save; a stale file only costs adding the difference on the next open.
_SAVE_ALWAYS_BYTES = 256 * 1024 * 1024
_SAVE_CHANGED_SHARE = 0.05
# Lexical rankings of hybrid searches, run beside the query's embedding.
_LEXICAL_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="lexical-search")


class KnowledgeBase:
    """A persistent, thread-safe chunk index with dense, lexical and hybrid search."""

    def __init__(
        self,
        directory: Path,
        embedder: Embedder,
        settings: RetrievalSettings,
        docstore: Docstore,
        lock_handle: IO[str],
    ) -> None:
        # Use ``KnowledgeBase.open``; this only wires parts together.
        self.directory = directory
        self.settings = settings
        self._embedder = embedder
        self._docstore = docstore
        self._lock_handle = lock_handle
        self._chunker = Chunker(settings.chunk_size, settings.chunk_overlap)
        self._rw = ReadWriteLock()
        self._writer = threading.Lock()
        self._kb_id = docstore.get_meta("kb_id") or ""
        self._generation = docstore.generation()
        self._documents, self._chunks = docstore.counts()
        self._index = VectorIndex.empty(embedder.dimension, settings)
        self._saved_generation = UNSAVED
        self._changes_since_save = 0
        self._closed = False

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def open(
        cls, directory: Path, embedder: Embedder, settings: RetrievalSettings | None = None
    ) -> KnowledgeBase:
        """Open (creating if needed) the knowledge base stored in ``directory``.

        Raises ``IndexLockedError`` if another process has it open and ``IncompatibleIndexError``
        if its chunks were embedded by another embedder.
        """
        settings = settings or RetrievalSettings()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        lock_handle = lock_directory(directory)
        try:
            docstore = Docstore(directory / DOCSTORE_FILE)
            try:
                record_embedder(docstore, embedder, directory)
                kb = cls(directory, embedder, settings, docstore, lock_handle)
                kb._index, kb._saved_generation = load_index(
                    directory, docstore, embedder.dimension, settings
                )
                if kb._chunks and kb._saved_generation != kb._generation:
                    kb._save_index()
            except BaseException:
                docstore.close()
                raise
        except BaseException:
            lock_handle.close()
            raise
        logger.info(
            "opened knowledge base %s: %d documents, %d chunks, %s index, embedder %s",
            directory,
            kb._documents,
            kb._chunks,
            kb._index.description,
            embedder.name,
        )
        return kb

    def close(self) -> None:
        """Save the index if it changed since the last save and release the directory."""
        with self._writer, self._rw.write():
            if self._closed:
                return
            if self._saved_generation != self._generation and self._chunks:
                self._save_index()
            self._closed = True
            self._docstore.close()
            self._lock_handle.close()

    def __enter__(self) -> KnowledgeBase:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _build_index(self) -> VectorIndex:
        return build_from_docstore(self._docstore, self._embedder.dimension, self.settings)

    def _save_index(self) -> None:
        self._index.save(self.directory, self._generation)
        self._saved_generation = self._generation
        self._changes_since_save = 0

    def _maybe_save(self, changed: int) -> None:
        self._changes_since_save += changed
        small = self._index.bytes_estimate() <= _SAVE_ALWAYS_BYTES
        if small or self._changes_since_save >= _SAVE_CHANGED_SHARE * max(self._index.live, 1):
            self._save_index()

    # ------------------------------------------------------------------ writes

    def ingest(self, documents: Iterable[Document], progress: bool = False) -> IngestSummary:
        """Add new documents, replace changed ones, skip unchanged ones; one atomic commit.

        Invalid documents are skipped and described in ``errors``; the rest are ingested.
        """
        with self._writer:
            self._check_open()
            plan = plan_ingest(documents, self._docstore, self._chunker)
            vectors = self._embed_chunks(plan, progress)
            if not plan.changes:
                return IngestSummary(
                    received=plan.received, unchanged=plan.unchanged, errors=tuple(plan.errors)
                )
            self._docstore.begin()
            try:
                added_ids, removed_ids, added_docs = self._write_plan(plan, vectors)
                self._docstore.bump_generation()
                self._commit(added_ids, vectors, np.asarray(removed_ids, dtype=np.int64), added_docs)
            except BaseException:
                self._docstore.rollback()
                raise
            self._maybe_save(len(added_ids) + len(removed_ids))
        summary = IngestSummary(
            received=plan.received,
            added=added_docs,
            updated=len(plan.changes) - added_docs,
            unchanged=plan.unchanged,
            chunks_added=len(added_ids),
            chunks_removed=len(removed_ids),
            errors=tuple(plan.errors),
        )
        logger.info("ingest: %s", summary)
        return summary

    def _embed_chunks(self, plan: IngestPlan, progress: bool) -> np.ndarray:
        return embed_plan(self._embedder, plan, self.settings.embed_batch_size, progress)

    def _write_plan(self, plan: IngestPlan, vectors: np.ndarray) -> tuple[np.ndarray, list[int], int]:
        """Apply the plan inside the open transaction; returns (added ids, removed ids, new docs)."""
        next_id = self._docstore.next_chunk_id()
        first_id = next_id
        removed: list[int] = []
        offset = 0
        added_docs = 0
        for change in plan.changes:
            document = change.document
            added_docs += not change.existed
            if change.rechunk:
                if change.existed:
                    removed.extend(self._docstore.delete_chunks(document.id))
                count = len(change.chunks)
            else:
                count = change.kept_chunks
            self._docstore.put_document(
                document.id,
                source=document.source,
                metadata=document.metadata,
                content_hash=change.content_hash,
                chunk_count=count,
            )
            if change.rechunk and change.chunks:
                self._docstore.insert_chunks(
                    document.id, change.chunks, vectors[offset : offset + len(change.chunks)], next_id
                )
                offset += len(change.chunks)
                next_id += len(change.chunks)
        return np.arange(first_id, next_id, dtype=np.int64), removed, added_docs

    def delete(self, ids: Sequence[str]) -> DeleteSummary:
        """Delete documents (and their chunks) by id; unknown ids are reported, not errors."""
        with self._writer:
            self._check_open()
            not_found: list[str] = []
            removed: list[int] = []
            deleted = 0
            self._docstore.begin()
            try:
                for doc_id in dict.fromkeys(ids):
                    if self._docstore.document_state(doc_id) is None:
                        not_found.append(doc_id)
                        continue
                    removed.extend(self._docstore.delete_document(doc_id))
                    deleted += 1
                if not deleted:
                    self._docstore.rollback()
                    return DeleteSummary(0, tuple(not_found))
                self._docstore.bump_generation()
                empty = np.zeros((0, self._embedder.dimension), dtype=np.float32)
                self._commit(np.zeros(0, dtype=np.int64), empty, np.asarray(removed, np.int64), -deleted)
            except BaseException:
                self._docstore.rollback()
                raise
            self._maybe_save(len(removed))
        logger.info("deleted %d documents (%d chunks); not found: %s", deleted, len(removed), not_found)
        return DeleteSummary(deleted, tuple(not_found))

    def _commit(
        self, add_ids: np.ndarray, add_vectors: np.ndarray, remove_ids: np.ndarray, doc_delta: int
    ) -> None:
        """Prepare the index change, then commit SQLite and swap/edit the index atomically."""
        replacement: VectorIndex | None = None
        if self._index.needs_rebuild(len(add_ids), len(remove_ids)):
            # The writer connection sees this transaction's rows: the rebuilt index is exactly
            # the state about to be committed. Built before taking the lock: searches go on.
            replacement = self._build_index()
        elif self._index.prefers_copy(len(add_ids)):
            replacement = self._index.copy()
            replacement.apply(add_ids, add_vectors, remove_ids)
        with self._rw.write():
            self._docstore.commit()
            self._generation += 1
            self._documents += doc_delta
            self._chunks += len(add_ids) - len(remove_ids)
            if replacement is not None:
                self._index = replacement
                return
            try:
                self._index.apply(add_ids, add_vectors, remove_ids)
            except Exception:  # committed already: rebuild rather than serve a wrong index
                logger.exception("vector index edit failed after commit; rebuilding from the docstore")
                self._index = self._build_index()

    # ------------------------------------------------------------------ search

    def search(
        self,
        query: str,
        top_k: int | None = None,
        mode: SearchMode = "hybrid",
        min_score: float = 0.0,
        metadata_filter: Mapping[str, str] | None = None,
    ) -> list[RetrievedChunk]:
        """The best ``top_k`` chunks for ``query``, best first.

        Scores: cosine (dense), BM25 (lexical), reciprocal-rank fusion scaled so that first in
        both lists is 1.0 (hybrid). Hits scoring below ``min_score`` are dropped. A
        ``metadata_filter`` keeps chunks of documents whose metadata has every key with that
        exact value. Raises ``InvalidQueryError`` and ``EmptyIndexError``.
        """
        request = validate_search(query, top_k, mode, min_score, metadata_filter, self.settings)
        # Hybrid: the lexical ranking runs on another thread while this one embeds the query
        # (the slow part; the embedder and numpy both release the GIL). Its result is taken before
        # this thread's read lock (waiting for it while holding one could deadlock behind a
        # writer) and used only if no write committed since; otherwise it is ranked again below,
        # so both rankings always see one version of the index.
        pending = _LEXICAL_POOL.submit(self._lexical, request) if request.mode == "hybrid" else None
        query_vector = None
        if request.mode != "lexical":  # embedded before taking the lock: it is the slow part
            query_vector = check_embeddings(self._embedder, self._embedder.embed([request.query]), 1)
        early = pending.result() if pending is not None else None
        with self._rw.read():
            self._check_open()
            if not self._chunks:
                raise EmptyIndexError(
                    f"the knowledge base in {str(self.directory)!r} has no documents: ingest some first"
                )
            sparse = early[1] if early is not None and early[0] == self._generation else None
            with self._docstore.reading() as conn:
                ranked = rank(
                    conn,
                    self._docstore,
                    self._index,
                    request,
                    query_vector,
                    self.settings,
                    sparse,
                )
                ranked = [(i, score) for i, score in ranked if score >= request.min_score][: request.top_k]
                rows = self._docstore.fetch_chunks(conn, [chunk_id for chunk_id, _ in ranked])
        return [
            RetrievedChunk(
                document_id=row.document_id,
                chunk_id=str(chunk_id),
                score=float(score),
                text=row.text,
                metadata=row.metadata,
                start=row.start,
                end=row.end,
                source=row.source,
            )
            for chunk_id, score in ranked
            if (row := rows.get(chunk_id)) is not None
        ]

    def _lexical(self, request: SearchRequest) -> tuple[int, list[tuple[int, float]]]:
        """(the index generation it saw, the lexical ranking)."""
        with self._rw.read(), self._docstore.reading() as conn:
            return self._generation, rank_lexical(conn, self._docstore, request, self.settings)

    # ------------------------------------------------------------------ state

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"the knowledge base in {str(self.directory)!r} is closed")

    @property
    def fingerprint(self) -> str:
        """Changes whenever the content, the embedder or the index type changes."""
        with self._rw.read():
            return self._fingerprint()

    def _fingerprint(self) -> str:
        key = "|".join(
            [
                self._kb_id,
                str(self._generation),
                self._embedder.name,
                str(self._embedder.dimension),
                self.settings.index_build_key(),
            ]
        )
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    def stats(self) -> IndexStats:
        with self._rw.read():
            return IndexStats(
                documents=self._documents,
                chunks=self._chunks,
                dimension=self._embedder.dimension,
                index_type=self.settings.index_type,
                bytes_on_disk=directory_size(self.directory),
                embedder=self._embedder.name,
                fingerprint=self._fingerprint(),
            )
