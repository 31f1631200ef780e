"""What the knowledge-store tests share."""

from __future__ import annotations

import numpy as np

from hybrid_assistant.retrieval import HashingEmbedder


class CountingEmbedder(HashingEmbedder):
    """The real hashing embedder, counting the texts it is asked to embed (to prove none are)."""

    def __init__(self) -> None:
        super().__init__()
        self.texts = 0

    def embed(self, texts: list[str]) -> np.ndarray:
        self.texts += len(texts)
        return super().embed(texts)
