"""Fixtures for the retrieval tests: real SQLite and FAISS, the hashing embedder by default."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hybrid_assistant.retrieval import Document, HashingEmbedder, KnowledgeBase, RetrievalSettings

# Small enough to train and build in milliseconds, big enough to exercise each code path:
# IVF trains at 200 vectors into 8 cells; HNSW is rebuilt once a fifth of it is deleted.
INDEX_SETTINGS: dict[str, dict[str, Any]] = {
    "flat": {"index_type": "flat"},
    "ivf": {"index_type": "ivf", "ivf_nlist": 8, "ivf_nprobe": 4, "ivf_train_threshold": 200},
    "hnsw": {"index_type": "hnsw", "hnsw_m": 16, "hnsw_ef_construction": 64, "hnsw_ef_search": 64},
}

TOPICS = {
    "astronomy": "The telescope observed a distant galaxy and its bright quasar near the nebula.",
    "cooking": "Whisk the eggs with flour and butter, then bake the dough in a hot oven.",
    "sailing": "The sailors trimmed the mainsail and the jib as the yacht tacked upwind.",
    "botany": "The orchid roots absorb water while chlorophyll in the leaves drives photosynthesis.",
    "finance": "The central bank raised interest rates to curb inflation and steady the bond market.",
    "geology": "Magma rose through the crust and cooled into basalt and granite formations.",
}


@pytest.fixture
def embedder() -> HashingEmbedder:
    return HashingEmbedder(dimension=256)


@pytest.fixture(params=sorted(INDEX_SETTINGS))
def index_type(request: pytest.FixtureRequest) -> str:
    """Runs a test once per index type: the contract every index type must meet."""
    return str(request.param)


@pytest.fixture
def open_kb(tmp_path: Path, embedder: HashingEmbedder) -> Iterator[Callable[..., KnowledgeBase]]:
    """``open_kb(index_type="flat", directory=None, **settings)``; closes what it opened."""
    opened: list[KnowledgeBase] = []

    def factory(index_type: str = "flat", directory: Path | None = None, **overrides: Any) -> KnowledgeBase:
        values = {"chunk_size": 200, "chunk_overlap": 40, **INDEX_SETTINGS[index_type], **overrides}
        kb = KnowledgeBase.open(directory or tmp_path / "kb", embedder, RetrievalSettings(**values))
        opened.append(kb)
        return kb

    yield factory
    for kb in opened:
        kb.close()


def topic_documents(copies: int = 1) -> list[Document]:
    """One document per topic (and copy), metadata ``topic`` and ``copy``."""
    return [
        Document(
            id=f"{topic}-{copy}",
            text=f"{sentence} Copy {copy} of the {topic} notes.",
            metadata={"topic": topic, "copy": str(copy)},
            source=f"notes/{topic}.txt",
        )
        for copy in range(copies)
        for topic, sentence in TOPICS.items()
    ]


def clustered_vectors(count: int, dimension: int, clusters: int, seed: int = 0) -> np.ndarray:
    """Unit vectors in tight, well-separated clusters: a row's nearest neighbours are known."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dimension)).astype(np.float32)
    vectors = centres[np.arange(count) % clusters] + 0.05 * rng.standard_normal((count, dimension)).astype(
        np.float32
    )
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.fixture(scope="session")
def minilm() -> Any:
    """The real default embedder, loaded once per session (tests using it are marked slow)."""
    from hybrid_assistant.retrieval import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder(batch_size=32)
