"""FAISS inner-product index keyed by the docstore's chunk ids (``IndexIDMap2``).

Three kinds, chosen by ``RetrievalSettings.index_type``:

* ``flat`` — exact search; add and remove in place.
* ``ivf`` — IVFFlat. Stays exact (flat) until ``ivf_train_threshold`` vectors exist, then is
  trained on a sample of them; retrained after growing ``ivf_retrain_growth`` times. A trained
  IVF index stores the chunk ids itself, not through ``IndexIDMap2``: IVF does not renumber its
  internal ids after a removal, so the id map's positional translation would go stale (wrong
  ids returned, then a FAISS assertion abort on the next removal).
* ``hnsw`` — HNSWFlat. FAISS cannot remove from an HNSW graph, so removed ids are masked at
  search time and the graph is rebuilt once ``hnsw_compact_ratio`` of it is masked.

The index is a cache of the embeddings stored in SQLite: it can always be rebuilt from them,
so it is saved (atomically) only as an optimisation for restarts.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from hybrid_assistant.retrieval.settings import RetrievalSettings

logger = logging.getLogger(__name__)

# faiss ships partial type stubs (no SearchParametersHNSW, no IndexIDMap2 members): go through
# an untyped alias where they fall short.
_faiss: Any = faiss

# FAISS warns below ~39 training points per centroid; fewer gives poor cells.
_MIN_POINTS_PER_CELL = 39
_TRAIN_POINTS_PER_CELL = 50
# HNSW inserts are slow (~0.1-1 ms each): above this many, add to a copy outside the lock.
_HNSW_COPY_ON_WRITE_ADDS = 256
# Fewer queries than this run on one OpenMP thread. A single query gains little from FAISS's
# threads and, on a busy machine (an LLM decoding beside it), waiting for them made one search
# 10-40x slower in bench/retrieval.py. FAISS's thread count is per calling thread, so this
# leaves index builds and other threads alone.
_SERIAL_QUERY_LIMIT = 8
_FILE_PATTERN = re.compile(r"^vectors-g(\d+)-(.+)\.faiss$")


def _as_ids(ids: Iterable[int] | np.ndarray) -> np.ndarray:
    array = ids if isinstance(ids, np.ndarray) else np.fromiter(ids, dtype=np.int64)
    return np.ascontiguousarray(array, dtype=np.int64)


def auto_nlist(count: int, configured: int | None) -> int:
    """IVF cell count for ``count`` vectors: √n unless configured, never under 39 points a cell."""
    wanted = configured if configured is not None else int(math.sqrt(count))
    return max(1, min(wanted, count // _MIN_POINTS_PER_CELL))


class VectorIndex:
    """A FAISS index of unit vectors with stable int64 ids. Not thread-safe for writes: the
    knowledge base excludes searches while it mutates one in place."""

    def __init__(self, index: Any, dimension: int, settings: RetrievalSettings) -> None:
        self._index: Any = index
        self.dimension = dimension
        self.settings = settings
        self._tombstones: set[int] = set()
        self._mask: faiss.IDSelector | None = None
        self._mask_parts: tuple[object, ...] = ()
        self.trained = isinstance(_inner(index), faiss.IndexIVF)
        # Size at training time decides when to retrain; after a load the current size stands in.
        self.trained_size = int(index.ntotal) if self.trained else 0

    # ------------------------------------------------------------------ construction

    @classmethod
    def empty(cls, dimension: int, settings: RetrievalSettings) -> VectorIndex:
        return cls(cls._new_faiss(dimension, settings, 0), dimension, settings)

    @classmethod
    def build(
        cls, dimension: int, settings: RetrievalSettings, batches: Iterable[tuple[np.ndarray, np.ndarray]]
    ) -> VectorIndex:
        """A fresh index of all ``(ids, vectors)`` batches (trained first when IVF needs it)."""
        id_parts, vector_parts = [], []
        for ids, vectors in batches:
            id_parts.append(_as_ids(ids))
            vector_parts.append(np.ascontiguousarray(vectors, dtype=np.float32))
        ids = np.concatenate(id_parts) if id_parts else np.zeros(0, dtype=np.int64)
        vectors = np.concatenate(vector_parts) if vector_parts else np.zeros((0, dimension), np.float32)
        index = cls._new_faiss(dimension, settings, len(ids))
        inner = _inner(index)
        if isinstance(inner, faiss.IndexIVF):
            rng = np.random.default_rng(0)  # a fixed sample: the same corpus builds the same cells
            take = min(len(vectors), _TRAIN_POINTS_PER_CELL * inner.nlist)
            sample = vectors[np.sort(rng.choice(len(vectors), size=take, replace=False))]
            logger.info("training IVF index: %d cells on %d of %d vectors", inner.nlist, take, len(vectors))
            index.train(sample)
        if len(ids):
            index.add_with_ids(vectors, ids)
        built = cls(index, dimension, settings)
        logger.info("built %s vector index with %d vectors", built.description, len(ids))
        return built

    @staticmethod
    def _new_faiss(dimension: int, settings: RetrievalSettings, count: int) -> Any:
        metric = faiss.METRIC_INNER_PRODUCT
        if settings.index_type == "hnsw":
            index: Any = faiss.index_factory(dimension, f"IDMap2,HNSW{settings.hnsw_m},Flat", metric)
            _faiss.downcast_index(index.index).hnsw.efConstruction = settings.hnsw_ef_construction
            return index
        if settings.index_type == "ivf" and count >= settings.ivf_train_threshold:
            nlist = auto_nlist(count, settings.ivf_nlist)
            if settings.ivf_nlist is not None and nlist < settings.ivf_nlist:
                logger.warning("ivf_nlist %d lowered to %d for %d vectors", settings.ivf_nlist, nlist, count)
            return faiss.index_factory(dimension, f"IVF{nlist},Flat", metric)
        return faiss.index_factory(dimension, "IDMap2,Flat", metric)

    def copy(self) -> VectorIndex:
        clone = VectorIndex(faiss.clone_index(self._index), self.dimension, self.settings)
        clone.trained_size = self.trained_size
        clone._set_tombstones(set(self._tombstones))
        return clone

    # ------------------------------------------------------------------ state

    @property
    def description(self) -> str:
        kind = self.settings.index_type
        if kind == "ivf" and not self.trained:
            return "ivf (untrained: exact until trained)"
        return kind

    @property
    def stored(self) -> int:
        """Vectors in the FAISS structure, masked ones included."""
        return int(self._index.ntotal)

    @property
    def live(self) -> int:
        return self.stored - len(self._tombstones)

    def ids(self) -> np.ndarray:
        """Every stored id, masked ones included."""
        if isinstance(self._index, faiss.IndexIDMap2):
            return faiss.vector_to_array(self._index.id_map).astype(np.int64)
        return _ivf_ids(_faiss.downcast_index(self._index))

    def needs_rebuild(self, adds: int, removes: int) -> bool:
        """Whether applying this change should rebuild the index rather than edit it."""
        after = self.live + adds - removes
        if self.settings.index_type == "ivf":
            if not self.trained:
                return after >= self.settings.ivf_train_threshold
            return after > self.settings.ivf_retrain_growth * max(self.trained_size, 1)
        if self.settings.index_type == "hnsw":
            masked = len(self._tombstones) + removes
            return masked > 0 and masked > self.settings.hnsw_compact_ratio * (self.stored + adds)
        return False

    def prefers_copy(self, adds: int) -> bool:
        """Whether ``apply`` is slow enough that it should run on a copy, outside the lock."""
        return self.settings.index_type == "hnsw" and adds >= _HNSW_COPY_ON_WRITE_ADDS

    # ------------------------------------------------------------------ edits

    def apply(self, add_ids: np.ndarray, add_vectors: np.ndarray, remove_ids: np.ndarray) -> None:
        """Remove then add. Removing an id that is not stored is a no-op."""
        if len(remove_ids):
            self._remove(_as_ids(remove_ids))
        if len(add_ids):
            vectors = np.ascontiguousarray(add_vectors, dtype=np.float32)
            self._index.add_with_ids(vectors, _as_ids(add_ids))

    def _remove(self, ids: np.ndarray) -> None:
        if self.settings.index_type == "hnsw":
            present = ids[np.isin(ids, self.ids())]
            self._set_tombstones(self._tombstones | set(present.tolist()))
        else:
            self._index.remove_ids(faiss.IDSelectorBatch(ids))

    def _set_tombstones(self, tombstones: set[int]) -> None:
        self._tombstones = tombstones
        if not tombstones:
            self._mask, self._mask_parts = None, ()
            return
        batch = faiss.IDSelectorBatch(np.fromiter(tombstones, dtype=np.int64, count=len(tombstones)))
        self._mask = faiss.IDSelectorNot(batch)
        self._mask_parts = (batch,)  # IDSelectorNot borrows ``batch``: keep it alive

    # ------------------------------------------------------------------ search

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` ``(scores, ids)`` per query row; missing hits have id -1.

        ``allowed`` restricts the search to those ids (they must all be live).
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = max(1, min(k, self.live))
        keep: tuple[object, ...] = ()
        selector: faiss.IDSelector | None = None
        if allowed is not None:
            selector = faiss.IDSelectorBatch(_as_ids(allowed))
            keep = (selector,)
        elif self._mask is not None:
            selector = self._mask
        params = self._params(selector)
        with _omp_threads(1 if len(queries) < _SERIAL_QUERY_LIMIT else None):
            scores, ids = self._index.search(queries, k, params=params)
        del keep
        return scores, ids

    def _params(self, selector: faiss.IDSelector | None) -> Any:
        # Fresh parameters per call: FAISS temporarily rewrites ``sel`` on them inside IndexIDMap,
        # so sharing one object across threads would race.
        inner = _inner(self._index)
        params: Any
        if isinstance(inner, faiss.IndexIVF):
            params = _faiss.SearchParametersIVF()
            params.nprobe = min(self.settings.ivf_nprobe, inner.nlist)
        elif isinstance(inner, faiss.IndexHNSW):
            params = _faiss.SearchParametersHNSW()
            params.efSearch = self.settings.hnsw_ef_search
        elif selector is None:
            return None
        else:
            params = _faiss.SearchParameters()
        if selector is not None:
            params.sel = selector
        return params

    # ------------------------------------------------------------------ persistence

    def file_name(self, generation: int) -> str:
        return f"vectors-g{generation}-{self.settings.index_build_key()}.faiss"

    def save(self, directory: Path, generation: int) -> Path:
        """Write atomically (temporary file, fsync, rename, fsync the directory); the generation
        in the file name says which docstore state it reflects."""
        path = directory / self.file_name(generation)
        tmp = path.with_name(path.name + ".tmp")
        faiss.write_index(self._index, str(tmp))
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_directory(directory)
        for other in directory.glob("vectors-g*.faiss*"):
            if other != path:
                other.unlink(missing_ok=True)
        return path

    @staticmethod
    def find_saved(directory: Path, settings: RetrievalSettings) -> tuple[Path, int] | None:
        """The newest saved index built with these settings, and its generation."""
        best: tuple[Path, int] | None = None
        for candidate in directory.glob("vectors-g*.faiss"):
            match = _FILE_PATTERN.match(candidate.name)
            if match and match.group(2) == settings.index_build_key():
                generation = int(match.group(1))
                if best is None or generation > best[1]:
                    best = (candidate, generation)
        return best

    @classmethod
    def load(cls, path: Path, dimension: int, settings: RetrievalSettings) -> VectorIndex:
        index = faiss.read_index(str(path))
        plain_ivf = isinstance(index, faiss.IndexIVF)
        mapped = isinstance(index, faiss.IndexIDMap2) and not isinstance(_inner(index), faiss.IndexIVF)
        if index.d != dimension or not (plain_ivf or mapped):
            raise ValueError(f"{str(path)!r} holds a {type(index).__name__} of dimension {index.d}")
        return cls(index, dimension, settings)

    def bytes_estimate(self) -> int:
        return self.stored * self.dimension * 4


def _inner(index: Any) -> Any:
    """The index doing the search: what an ``IndexIDMap2`` wraps, or the index itself."""
    return _faiss.downcast_index(index.index if isinstance(index, faiss.IndexIDMap2) else index)


def _ivf_ids(index: Any) -> np.ndarray:
    """Every id stored in an IVF index's inverted lists."""
    invlists = index.invlists
    parts = [np.zeros(0, dtype=np.int64)]
    for list_no in range(index.nlist):
        size = invlists.list_size(list_no)
        if size:
            pointer = invlists.get_ids(list_no)
            parts.append(faiss.rev_swig_ptr(pointer, size).astype(np.int64))  # astype copies
            invlists.release_ids(list_no, pointer)
    return np.concatenate(parts)


@contextmanager
def _omp_threads(count: int | None) -> Iterator[None]:
    """Run FAISS calls made by this thread on ``count`` OpenMP threads (None: unchanged)."""
    if count is None:
        yield
        return
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(count)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
