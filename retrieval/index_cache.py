"""The saved FAISS index: a cache of the docstore's embeddings, reconciled on open.

The file name carries the docstore generation it reflects. On open the newest file built with
the current settings is loaded and brought to the docstore's state by id difference — chunk ids
are never reused and a chunk's embedding never changes, so ids present only in the file are
removed and ids present only in the docstore are added from their stored embeddings. No file,
an unreadable one, other settings, or a difference big enough to warrant it: rebuild from the
stored embeddings. Nothing is ever re-embedded.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from hybrid_assistant.retrieval.docstore import Docstore
from hybrid_assistant.retrieval.settings import RetrievalSettings
from hybrid_assistant.retrieval.vector_index import VectorIndex

logger = logging.getLogger(__name__)

UNSAVED = -1


def build_from_docstore(docstore: Docstore, dimension: int, settings: RetrievalSettings) -> VectorIndex:
    """A fresh index of every stored embedding as the writer connection sees them (so, inside a
    write transaction, including its uncommitted rows)."""
    return VectorIndex.build(dimension, settings, docstore.iter_embeddings(dimension))


def load_index(
    directory: Path, docstore: Docstore, dimension: int, settings: RetrievalSettings
) -> tuple[VectorIndex, int]:
    """The index matching the docstore, and the generation its saved file holds (``UNSAVED`` when
    the file is missing or behind)."""
    generation = docstore.generation()
    loaded = _load_saved(directory, docstore, dimension, settings)
    if loaded is None:
        return build_from_docstore(docstore, dimension, settings), UNSAVED
    index, saved_generation, changed = loaded
    if changed:
        logger.info(
            "vector index saved at generation %d brought to docstore generation %d",
            saved_generation,
            generation,
        )
        return index, UNSAVED
    return index, saved_generation


def _load_saved(
    directory: Path, docstore: Docstore, dimension: int, settings: RetrievalSettings
) -> tuple[VectorIndex, int, bool] | None:
    saved = VectorIndex.find_saved(directory, settings)
    if saved is None:
        return None
    path, generation = saved
    try:
        index = VectorIndex.load(path, dimension, settings)
    except Exception:  # any unreadable cache is rebuilt from the docstore
        logger.warning("cannot read %s; rebuilding the vector index", path, exc_info=True)
        return None
    truth = docstore.all_chunk_ids()
    stored = index.ids()
    extra = np.setdiff1d(stored, truth, assume_unique=True)
    missing = np.setdiff1d(truth, stored, assume_unique=True)
    if index.needs_rebuild(len(missing), len(extra)):
        return None
    if len(missing) or len(extra):
        with docstore.reading() as conn:
            vectors = docstore.embeddings(conn, missing, dimension)
        index.apply(missing, vectors, extra)
        logger.info("reconciled %s: %d vectors added, %d removed", path.name, len(missing), len(extra))
    return index, generation, bool(len(missing) or len(extra))
