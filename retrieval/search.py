"""One search: validate the request, rank chunk ids densely, lexically or both (RRF)."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

import numpy as np

from hybrid_assistant.retrieval import lexical
from hybrid_assistant.retrieval.docstore import Docstore
from hybrid_assistant.retrieval.errors import InvalidQueryError
from hybrid_assistant.retrieval.fusion import max_fused_score, reciprocal_rank_fusion
from hybrid_assistant.retrieval.settings import RetrievalSettings
from hybrid_assistant.retrieval.types import SEARCH_MODES, SearchMode
from hybrid_assistant.retrieval.vector_index import VectorIndex

# A filter matching at most this many chunks is searched exactly over their stored embeddings:
# cheaper than a FAISS pass, and exact where filtered HNSW/IVF would miss hits.
EXACT_FILTER_LIMIT = 4096
# Each filter key is one term of an SQL compound SELECT; SQLite refuses more than 500 terms
# ("too many terms in compound SELECT"), so the filter is bounded well below that.
MAX_FILTER_KEYS = 32
MAX_FILTER_KEY_LENGTH = 256
MAX_FILTER_VALUE_LENGTH = 1024
_ECHO = 200  # characters of a bad value quoted back


@dataclass(frozen=True)
class SearchRequest:
    query: str
    top_k: int
    mode: SearchMode
    min_score: float
    metadata_filter: Mapping[str, str]


def validate_search(
    query: str,
    top_k: int | None,
    mode: str,
    min_score: float,
    metadata_filter: Mapping[str, str] | None,
    settings: RetrievalSettings,
) -> SearchRequest:
    """A valid request, or ``InvalidQueryError`` listing every problem with its value.

    The types are checked at run time too: callers pass values straight from the wire.
    """
    problems = []
    if not isinstance(query, str) or not query.strip():
        problems.append(f"query must be a non-empty string, got {_short(query)}")
    if top_k is None:
        top_k = settings.default_top_k
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= settings.max_top_k:
        problems.append(f"top_k must be an integer from 1 to {settings.max_top_k}, got {top_k!r}")
    if mode not in SEARCH_MODES:
        problems.append(f"mode must be one of {', '.join(SEARCH_MODES)}, got {_short(mode)}")
    if isinstance(min_score, bool) or not isinstance(min_score, int | float) or not math.isfinite(min_score):
        problems.append(f"min_score must be a finite number, got {min_score!r}")
    filters: dict[str, str] = {}
    metadata_filter = metadata_filter or {}
    if len(metadata_filter) > MAX_FILTER_KEYS:
        problems.append(f"metadata_filter has {len(metadata_filter)} keys; at most {MAX_FILTER_KEYS}")
        metadata_filter = {}
    for key, value in metadata_filter.items():
        if not isinstance(key, str) or not key or not isinstance(value, str):
            problems.append(
                f"metadata_filter must map non-empty strings to strings, got {_short(key)}: {_short(value)}"
            )
        elif len(key) > MAX_FILTER_KEY_LENGTH or len(value) > MAX_FILTER_VALUE_LENGTH:
            problems.append(
                f"metadata_filter entry {_short(key)}: {_short(value)} is too long (keys at most "
                f"{MAX_FILTER_KEY_LENGTH} characters, values at most {MAX_FILTER_VALUE_LENGTH})"
            )
        else:
            filters[key] = value
    if problems:
        raise InvalidQueryError("; ".join(problems))
    return SearchRequest(query, top_k, cast(SearchMode, mode), float(min_score), filters)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _ECHO else f"{text[:_ECHO]}... ({len(text)} characters)"


def depth(request: SearchRequest, settings: RetrievalSettings) -> int:
    """How many candidates each ranking contributes (hybrid fuses more than it returns)."""
    if request.mode != "hybrid":
        return request.top_k
    return max(settings.hybrid_candidates, 2 * request.top_k)


def rank_lexical(
    conn: sqlite3.Connection, docstore: Docstore, request: SearchRequest, settings: RetrievalSettings
) -> list[tuple[int, float]]:
    """BM25 ranking from the docstore's in-memory index (FTS5's ranking, without its full scan)."""
    allowed = None
    if request.metadata_filter:
        allowed = docstore.chunk_ids_matching(conn, request.metadata_filter)
        if not len(allowed):
            return []
    words = lexical.query_words(request.query)
    return docstore.lexical.search(words, depth(request, settings), allowed)


def rank(
    conn: sqlite3.Connection,
    docstore: Docstore,
    index: VectorIndex,
    request: SearchRequest,
    query_vector: np.ndarray | None,
    settings: RetrievalSettings,
    sparse: list[tuple[int, float]] | None = None,
) -> list[tuple[int, float]]:
    """Chunk ids and scores, best first, before ``min_score`` and ``top_k`` are applied.

    ``sparse``: the lexical ranking when the caller already has it (computed concurrently)."""
    mode = request.mode
    dense: list[tuple[int, float]] = []
    if query_vector is not None:
        dense = _dense(conn, docstore, index, query_vector, depth(request, settings), request.metadata_filter)
    if mode == "dense":
        return dense
    if sparse is None:
        sparse = rank_lexical(conn, docstore, request, settings)
    if mode == "lexical":
        return sparse
    fused = reciprocal_rank_fusion([[i for i, _ in dense], [i for i, _ in sparse]], k=settings.rrf_k)
    scale = max_fused_score(2, settings.rrf_k)
    return [(chunk_id, score / scale) for chunk_id, score in fused]


def _dense(
    conn: sqlite3.Connection,
    docstore: Docstore,
    index: VectorIndex,
    query_vector: np.ndarray,
    depth: int,
    metadata_filter: Mapping[str, str],
) -> list[tuple[int, float]]:
    if metadata_filter:
        allowed = docstore.chunk_ids_matching(conn, metadata_filter)
        if not len(allowed):
            return []
        if len(allowed) <= EXACT_FILTER_LIMIT:
            vectors = docstore.embeddings(conn, allowed, index.dimension)
            scores = vectors @ query_vector[0]
            best = np.argsort(-scores, kind="stable")[:depth]
            return [(int(allowed[i]), float(scores[i])) for i in best]
        found_scores, ids = index.search(query_vector, depth, allowed)
    else:
        found_scores, ids = index.search(query_vector, depth)
    return [(int(i), float(s)) for i, s in zip(ids[0], found_scores[0], strict=True) if i >= 0]
