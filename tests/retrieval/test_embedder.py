from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hybrid_assistant.retrieval import EmbedderError, HashingEmbedder, SentenceTransformerEmbedder
from hybrid_assistant.retrieval.embedder import Embedder, check_embeddings


def test_hashing_embedder_is_deterministic_and_unit_norm() -> None:
    embedder = HashingEmbedder(dimension=64)
    vectors = embedder.embed(["The cat sat.", "the CAT sat", "", "dogs bark loudly"])
    assert vectors.shape == (4, 64)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors[[0, 1, 3]], axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(vectors[0], vectors[1])  # case and punctuation do not matter
    assert not vectors[2].any(), "a text with no words is the zero vector"
    np.testing.assert_array_equal(HashingEmbedder(64).embed(["dogs bark loudly"])[0], vectors[3])


def test_hashing_embedder_similarity_follows_shared_words() -> None:
    embedder = HashingEmbedder()
    query, near, far = embedder.embed(
        ["red apples", "fresh red apples in a basket", "quantum chromodynamics"]
    )
    assert float(query @ near) > 0.4
    assert abs(float(query @ far)) < 0.2


def test_hashing_embedder_meets_the_protocol() -> None:
    assert isinstance(HashingEmbedder(), Embedder)
    assert HashingEmbedder(32).name == "hashing-32"
    with pytest.raises(EmbedderError, match="4"):
        HashingEmbedder(4)


def test_check_embeddings_rejects_wrong_shapes_and_values() -> None:
    embedder = HashingEmbedder(16)
    with pytest.raises(EmbedderError, match=r"\(2, 8\)"):
        check_embeddings(embedder, np.zeros((2, 8), np.float32), 2)
    with pytest.raises(EmbedderError, match="non-finite"):
        check_embeddings(embedder, np.full((1, 16), np.nan, np.float32), 1)


def test_missing_model_directory_is_a_domain_error(tmp_path: Path) -> None:
    with pytest.raises(EmbedderError, match="nope"):
        SentenceTransformerEmbedder(tmp_path / "nope")


@pytest.mark.slow
def test_minilm_embeds_meaning(minilm: SentenceTransformerEmbedder) -> None:
    assert minilm.dimension == 384
    assert minilm.name == "sentence-transformers/all-MiniLM-L6-v2"
    vectors = minilm.embed(
        ["How do I bake bread?", "A recipe for baking a loaf of bread", "The stock market fell sharply today"]
    )
    assert vectors.shape == (3, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert float(vectors[0] @ vectors[1]) > float(vectors[0] @ vectors[2]) + 0.3
    assert minilm.embed([]).shape == (0, 384)
