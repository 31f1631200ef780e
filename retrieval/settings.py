"""Tuning knobs of a knowledge base, validated once when it is opened."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from hybrid_assistant.retrieval.types import IndexType


class RetrievalSettings(BaseModel):
    """How documents are chunked, indexed and searched.

    Only ``index_type`` and the build parameters of the chosen index (``ivf_nlist``, ``hnsw_m``,
    ``hnsw_ef_construction``) shape the vector-index file; changing them rebuilds the index from
    the stored embeddings on the next open (no re-embedding). Chunking settings apply to
    documents ingested after the change.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    chunk_size: int = Field(default=800, ge=32, le=100_000)
    """Largest chunk, in characters. 800 characters of English stay under MiniLM's 256 tokens."""
    chunk_overlap: int = Field(default=100, ge=0)
    """Characters that consecutive chunks may share (whole sentences, at most this many)."""

    index_type: IndexType = "flat"
    """``flat``: exact inner product (best up to ~100k chunks); ``ivf``: IVFFlat; ``hnsw``: HNSW graph."""
    ivf_nlist: int | None = Field(default=None, ge=1)
    """IVF cells; ``None`` picks ``min(4·√n, n/39)`` when the index is trained."""
    ivf_nprobe: int = Field(default=16, ge=1)
    """IVF cells visited per query: higher is slower and more exact."""
    ivf_train_threshold: int = Field(default=10_000, ge=1)
    """Below this many vectors an ``ivf`` index stays exact (flat); it is trained when it is reached."""
    ivf_retrain_growth: float = Field(default=8.0, gt=1.0)
    """Retrain the IVF cells when the index has grown this many times since it was trained."""
    hnsw_m: int = Field(default=32, ge=4, le=256)
    """HNSW graph degree: higher is more exact, bigger and slower to build."""
    hnsw_ef_construction: int = Field(default=40, ge=8)
    """HNSW build-time beam width."""
    hnsw_ef_search: int = Field(default=64, ge=1)
    """HNSW query-time beam width: higher is slower and more exact."""
    hnsw_compact_ratio: float = Field(default=0.2, gt=0.0, le=1.0)
    """HNSW cannot delete in place: deleted vectors are masked and the graph is rebuilt once this
    fraction of it is masked."""

    default_top_k: int = Field(default=5, ge=1)
    """Hits returned when the caller does not say."""
    max_top_k: int = Field(default=100, ge=1)
    """Largest ``top_k`` a caller may ask for."""
    rrf_k: int = Field(default=60, ge=1)
    """Reciprocal-rank-fusion constant: larger flattens the weight of the top ranks."""
    hybrid_candidates: int = Field(default=50, ge=1)
    """Depth of each ranked list (dense, lexical) fused by hybrid search (at least ``2·top_k``)."""
    embed_batch_size: int = Field(default=32, ge=1)
    """Chunks per embedder batch during ingest."""
    sync_interval_s: float = Field(default=1.0, gt=0.0, le=3600.0)
    """With a shared PostgreSQL store: how often a replica polls for documents changed elsewhere."""
    change_retention: int = Field(default=100_000, ge=1)
    """With a shared PostgreSQL store: change rows kept for replicas that are behind; a replica
    further behind (or starting cold) rebuilds its cache from the stored embeddings."""

    @model_validator(mode="after")
    def _check_consistency(self) -> RetrievalSettings:
        problems = []
        if self.chunk_overlap >= self.chunk_size:
            problems.append(
                f"chunk_overlap ({self.chunk_overlap}) must be smaller than chunk_size ({self.chunk_size})"
            )
        if self.default_top_k > self.max_top_k:
            problems.append(
                f"default_top_k ({self.default_top_k}) must not exceed max_top_k ({self.max_top_k})"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def index_build_key(self) -> str:
        """The settings that shape the stored vector index; a different key means a rebuild."""
        if self.index_type == "ivf":
            nlist = "auto" if self.ivf_nlist is None else str(self.ivf_nlist)
            return f"ivf-nlist{nlist}-t{self.ivf_train_threshold}"
        if self.index_type == "hnsw":
            return f"hnsw-m{self.hnsw_m}-efc{self.hnsw_ef_construction}"
        return "flat"
