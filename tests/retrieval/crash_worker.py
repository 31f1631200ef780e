"""Ingests batches into a knowledge base until it is killed (run by test_crash.py).

Each batch of 20 documents is one ingest call; after ingesting batch b the previous batch is
deleted in one delete call when b is even. It prints ``ingested <b>`` / ``deleted <b>`` after
each call returns, so the test knows what was committed before it sent SIGKILL.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from hybrid_assistant.retrieval import Document, HashingEmbedder, KnowledgeBase, RetrievalSettings
from tests.retrieval.conftest import INDEX_SETTINGS

DOCS_PER_BATCH = 20


class SlowEmbedder(HashingEmbedder):
    """Spends most of the ingest in embedding, where a kill most often lands in practice."""

    def embed(self, texts: list[str]) -> np.ndarray:
        time.sleep(0.002 * len(texts))
        return super().embed(texts)


def batch_documents(tag: str, batch: int) -> list[Document]:
    return [
        Document(
            id=f"{tag}-b{batch}-d{j}",
            text=" ".join(
                f"Fact {k} of {tag} batch {batch} item {j} concerns topic{(j + k) % 7}." for k in range(8)
            ),
            metadata={"batch": f"{tag}-{batch}"},
        )
        for j in range(DOCS_PER_BATCH)
    ]


def main() -> None:
    directory, tag, index_type, slow = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "slow"
    embedder = SlowEmbedder(64) if slow else HashingEmbedder(64)
    settings = RetrievalSettings(chunk_size=150, chunk_overlap=30, **INDEX_SETTINGS[index_type])
    kb = KnowledgeBase.open(Path(directory), embedder, settings)
    batch = 0
    while True:
        kb.ingest(batch_documents(tag, batch))
        print(f"ingested {batch}", flush=True)
        if batch % 2 == 0 and batch:
            kb.delete([f"{tag}-b{batch - 1}-d{j}" for j in range(DOCS_PER_BATCH)])
            print(f"deleted {batch - 1}", flush=True)
        batch += 1


if __name__ == "__main__":
    main()
