"""A replica's knowledge base: PostgreSQL holds the documents, the local docstore and FAISS index
are a cache that follows the shared change sequence.

Writes (``ingest``, ``delete``) go to the shared store in one transaction; the replica then
applies the change to its own cache at once, so its next search sees it. Every other replica
picks it up when the write's notification arrives (LISTEN/NOTIFY), or at the latest on its next
poll (``sync_interval_s``, 1 s by default): it reads the documents changed after the last change
it applied, in one consistent snapshot, and applies their current state to the cache — chunk ids
are the shared store's and never reused, so the id difference is the whole difference, and new
chunks come with their stored embeddings. Nothing is re-embedded.

A cache that starts cold, belongs to another database, or fell behind further than the change
rows kept (``change_retention``) is brought to the snapshot's full state instead, and its FAISS
index rebuilt from the stored embeddings. The last applied change sequence is kept in the cache's
meta, so a restart only replays what it missed.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import psycopg

from hybrid_assistant.retrieval.chunker import Chunk
from hybrid_assistant.retrieval.embedder import Embedder
from hybrid_assistant.retrieval.errors import CorruptIndexError, IncompatibleIndexError
from hybrid_assistant.retrieval.knowledge_base import DOCSTORE_FILE, KnowledgeBase
from hybrid_assistant.retrieval.settings import RetrievalSettings
from hybrid_assistant.retrieval.shared_ingest import delete_shared, ingest_shared
from hybrid_assistant.retrieval.shared_store import RemoteChunk, SharedStore, Snapshot
from hybrid_assistant.retrieval.types import DeleteSummary, Document, IngestSummary

logger = logging.getLogger(__name__)

_CHANGES_PER_PASS = 1000
_FULL_SYNC_PAGE = 1000  # documents read per query during a full sync
_KB_ID = "shared_kb_id"
_SEQ = "shared_seq"


class ReplicaKnowledgeBase(KnowledgeBase):
    """A :class:`KnowledgeBase` whose documents live in PostgreSQL; see the module docstring."""

    _store: SharedStore | None = None
    _follower: threading.Thread | None = None
    _stop: threading.Event
    _applied_seq = -1
    _shared_kb_id = ""

    @classmethod
    def open_replica(
        cls,
        directory: Path,
        embedder: Embedder,
        dsn: str,
        settings: RetrievalSettings | None = None,
        follow: bool = True,
    ) -> ReplicaKnowledgeBase:
        """Open the cache in ``directory`` on the shared store at ``dsn`` and bring it up to date.

        With ``follow``, a background thread keeps applying changes every
        ``settings.sync_interval_s``. Raises ``SharedStoreUnavailableError``, ``SharedSchemaError``,
        ``IncompatibleIndexError`` (the store holds another embedder's chunks) and ``IndexLockedError``.
        """
        settings = settings or RetrievalSettings()
        store = SharedStore.open(dsn, settings.change_retention)
        try:
            store.check_embedder(embedder.name, embedder.dimension)
            kb = cls._open_cache(Path(directory), embedder, settings)
        except BaseException:
            store.close()
            raise
        kb._store = store
        kb._shared_kb_id = kb._docstore.get_meta(_KB_ID) or ""
        kb._applied_seq = int(kb._docstore.get_meta(_SEQ) or -1)
        try:
            kb.sync()
        except BaseException:
            kb.close()
            raise
        if follow:
            kb._start_follower(settings.sync_interval_s)
        logger.info("knowledge cache %s follows %s from change %d", directory, store.where, kb._applied_seq)
        return kb

    @classmethod
    def _open_cache(
        cls, directory: Path, embedder: Embedder, settings: RetrievalSettings
    ) -> ReplicaKnowledgeBase:
        try:
            kb = cls.open(directory, embedder, settings)
        except (IncompatibleIndexError, CorruptIndexError) as exc:
            # Only a cache: start it afresh rather than refuse (the shared store is the truth).
            logger.warning("discarding the knowledge cache in %s (%s)", directory, exc)
            for path in [*directory.glob(DOCSTORE_FILE + "*"), *directory.glob("vectors-g*.faiss*")]:
                path.unlink(missing_ok=True)
            kb = cls.open(directory, embedder, settings)
        assert isinstance(kb, ReplicaKnowledgeBase)
        return kb

    def close(self) -> None:
        """Stop following, save the cache, release the directory and the connections."""
        self._stop_follower()
        super().close()
        if self._store is not None:
            self._store.close()

    # ------------------------------------------------------------------ writes

    def _shared(self) -> SharedStore:
        self._check_open()
        assert self._store is not None
        return self._store

    def ingest(self, documents: Iterable[Document], progress: bool = False) -> IngestSummary:
        """Ingest into the shared store, then apply the change here (other replicas follow)."""
        summary, write = ingest_shared(
            self._shared(), self._embedder, self._chunker, documents, self.settings.embed_batch_size, progress
        )
        if write.seq:
            self._catch_up(write.seq)
        return summary

    def delete(self, ids: Sequence[str]) -> DeleteSummary:
        summary, write = delete_shared(self._shared(), ids)
        if write.seq:
            self._catch_up(write.seq)
        return summary

    def _catch_up(self, seq: int) -> None:
        try:
            self.sync()
        except Exception:  # the write is committed; the follower applies it once the store answers
            logger.warning(
                "change %d is committed; this replica's cache will apply it later", seq, exc_info=True
            )

    # ------------------------------------------------------------------ following

    def sync(self) -> int:
        """Apply every change committed to the shared store so far; returns the last applied sequence."""
        store = self._shared()
        with self._writer:
            self._check_open()
            with store.snapshot() as snap:
                seq = self._applied_seq
                reason = self._full_sync_reason(snap)
                if reason:
                    logger.info(
                        "knowledge cache %s: full sync from the shared store (%s)", self.directory, reason
                    )
                    self._apply(snap, None, snap.head, reset=snap.kb_id != self._shared_kb_id)
                    return self._applied_seq
                while seq < snap.head:
                    upto, ids = snap.changed_documents(seq, _CHANGES_PER_PASS)
                    if not ids:
                        break
                    self._apply(snap, ids, upto, reset=False)
                    seq = upto
        return self._applied_seq

    def _full_sync_reason(self, snap: Snapshot) -> str:
        if snap.kb_id != self._shared_kb_id:
            return "cold cache" if not self._shared_kb_id else "cache of another database"
        if self._applied_seq < snap.pruned_through:
            return (
                f"change {self._applied_seq} is older than the changes kept (from {snap.pruned_through + 1})"
            )
        if self._applied_seq > snap.head:
            return (
                f"cache at change {self._applied_seq} is ahead of the store ({snap.head}): restored database?"
            )
        return ""

    def _apply(self, snap: Snapshot, ids: Sequence[str] | None, upto: int, reset: bool) -> None:
        """Bring the cached documents ``ids`` (all when None) to the snapshot's state, in one commit.

        A full sync goes page by page (memory stays one page of texts and embeddings) and ends
        with a FAISS index rebuilt from the stored embeddings; an incremental one edits the index.
        """
        docstore = self._docstore
        docstore.begin()
        try:
            if reset:  # chunk ids of another database mean nothing here
                for doc_id in docstore.document_ids():
                    docstore.delete_document(doc_id)
            if ids is None:
                everything = sorted({*snap.document_ids(), *docstore.document_ids()})
                changed = 0
                for start in range(0, len(everything), _FULL_SYNC_PAGE):
                    add_ids, _, removed, _ = self._apply_documents(
                        snap, everything[start : start + _FULL_SYNC_PAGE]
                    )
                    changed += len(add_ids) + len(removed)
            else:
                add_ids, vectors, removed, doc_delta = self._apply_documents(snap, ids)
                changed = len(add_ids) + len(removed)
            docstore.set_meta(_KB_ID, snap.kb_id)
            docstore.set_meta(_SEQ, str(upto))
            docstore.bump_generation()
            if ids is None:
                self._commit_rebuilt()
            else:
                self._commit(add_ids, vectors, np.asarray(removed, dtype=np.int64), doc_delta)
        except BaseException:
            docstore.rollback()
            raise
        self._applied_seq = upto
        self._shared_kb_id = snap.kb_id
        if ids is None:
            self._save_index()
        else:
            self._maybe_save(changed)
        logger.debug("applied shared changes through %d: %d chunks added or removed", upto, changed)

    def _apply_documents(
        self, snap: Snapshot, ids: Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray, list[int], int]:
        """Edit the docstore (inside the open transaction) to hold the snapshot's version of
        ``ids``; returns (added chunk ids, their embeddings, removed chunk ids, document delta)."""
        docstore = self._docstore
        remote = snap.documents(ids)
        removed: list[int] = []
        new_chunks: list[tuple[str, RemoteChunk]] = []
        doc_delta = 0
        for doc_id in dict.fromkeys([*remote, *ids]):
            existed = docstore.document_state(doc_id) is not None
            doc = remote.get(doc_id)
            if doc is None:
                if existed:
                    removed.extend(docstore.delete_document(doc_id))
                    doc_delta -= 1
                continue
            cached = set(docstore.chunk_ids_of(doc_id))
            stale = sorted(cached - {c.id for c in doc.chunks})
            docstore.delete_chunk_ids(stale)
            removed.extend(stale)
            docstore.put_document(
                doc_id,
                source=doc.source,
                metadata=json.loads(doc.metadata_json),
                content_hash=doc.content_hash,
                chunk_count=len(doc.chunks),
            )
            new_chunks.extend((doc_id, c) for c in doc.chunks if c.id not in cached)
            doc_delta += not existed
        add_ids = np.fromiter((c.id for _, c in new_chunks), dtype=np.int64, count=len(new_chunks))
        vectors = snap.embeddings(add_ids.tolist(), self._embedder.dimension)
        offset = 0
        for doc_id, group in itertools.groupby(new_chunks, key=lambda pair: pair[0]):
            chunks = [c for _, c in group]
            docstore.insert_chunks_with_ids(
                doc_id,
                [c.id for c in chunks],
                [Chunk(c.ordinal, c.text, c.start, c.end) for c in chunks],
                vectors[offset : offset + len(chunks)],
            )
            offset += len(chunks)
        return add_ids, vectors, removed, doc_delta

    def _commit_rebuilt(self) -> None:
        """Commit a full sync with a FAISS index rebuilt from the stored embeddings."""
        replacement = self._build_index()  # the writer's view: this transaction's rows included
        documents, chunks = self._docstore.counts()
        with self._rw.write():
            self._docstore.commit()
            self._generation += 1
            self._documents, self._chunks = documents, chunks
            self._index = replacement

    def _start_follower(self, interval: float) -> None:
        self._stop = threading.Event()
        self._follower = threading.Thread(
            target=self._follow, args=(interval,), name="knowledge-follower", daemon=True
        )
        self._follower.start()

    def _stop_follower(self) -> None:
        if self._follower is not None:
            self._stop.set()
            self._follower.join()
            self._follower = None

    def _follow(self, interval: float) -> None:
        """Sync when another replica's write commits (LISTEN/NOTIFY), and every ``interval``
        regardless: a lost notification or a dropped listening connection only costs latency."""
        listener: psycopg.Connection | None = None
        failing = False
        try:
            while not self._stop.is_set():
                listener = self._wait_for_change(listener, interval)
                if self._stop.is_set():
                    break
                try:
                    self.sync()
                except Exception:
                    if not failing:  # once per outage, not once a second
                        logger.warning("cannot follow the shared knowledge store; retrying", exc_info=True)
                    failing = True
                    continue
                if failing:
                    logger.info("following the shared knowledge store again (change %d)", self._applied_seq)
                    failing = False
        finally:
            if listener is not None:
                listener.close()

    def _wait_for_change(
        self, listener: psycopg.Connection | None, interval: float
    ) -> psycopg.Connection | None:
        """Wait up to ``interval`` for a change notification; returns the listener to reuse."""
        assert self._store is not None
        if listener is None:
            try:
                listener = self._store.listen()
            except psycopg.Error:
                self._stop.wait(interval)
                return None
        try:
            for _ in listener.notifies(timeout=interval, stop_after=1):
                pass
        except psycopg.Error:
            listener.close()
            return None
        return listener

    # ------------------------------------------------------------------ state

    @property
    def applied_seq(self) -> int:
        """The last shared change applied to this cache."""
        return self._applied_seq

    def _fingerprint(self) -> str:
        # Equal on every replica that applied the same changes of the same store.
        key = "|".join(
            [
                self._shared_kb_id,
                str(self._applied_seq),
                self._embedder.name,
                str(self._embedder.dimension),
                self.settings.index_build_key(),
            ]
        )
        return hashlib.sha256(key.encode()).hexdigest()[:16]
