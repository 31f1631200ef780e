"""Searches run concurrently with ingest and delete and always see one committed state."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from hybrid_assistant.retrieval import (
    Document,
    EmptyIndexError,
    HashingEmbedder,
    KnowledgeBase,
    RetrievalSettings,
)

DOCS = 30


def versioned(version: int) -> list[Document]:
    """Every chunk of every document names the version, so a mixed state would show."""
    return [
        Document(
            id=f"doc{j}",
            text=" ".join(f"Entry {k} of document {j} is in version v{version}." for k in range(12)),
            metadata={"version": str(version)},
        )
        for j in range(DOCS)
    ]


def test_searches_during_updates_see_one_version(
    open_kb: Callable[..., KnowledgeBase], index_type: str
) -> None:
    kb = open_kb(index_type, chunk_size=120, chunk_overlap=0)
    kb.ingest(versioned(0))
    chunks = kb.stats().chunks
    stop = threading.Event()
    problems: list[str] = []
    searches = [0]

    def search_forever(mode: str) -> None:
        while not stop.is_set():
            hits = kb.search("entry document version", top_k=40, mode=mode)  # type: ignore[arg-type]
            searches[0] += 1
            versions = {h.metadata["version"] for h in hits}
            if len(versions) != 1:
                problems.append(f"{mode}: mixed versions {versions}")
            elif any(f"version v{h.metadata['version']}." not in h.text for h in hits):
                problems.append(f"{mode}: chunk text from another version than its metadata")
            if len(hits) != 40:
                problems.append(f"{mode}: {len(hits)} hits")
            if kb.stats().chunks != chunks:
                problems.append(f"stats show {kb.stats().chunks} chunks")

    threads = [threading.Thread(target=search_forever, args=(m,)) for m in ("dense", "lexical", "hybrid")]
    for thread in threads:
        thread.start()
    try:
        for version in range(1, 9):
            summary = kb.ingest(versioned(version))
            assert summary.updated == DOCS
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert not problems, problems[:5]
    assert searches[0] > 0
    assert {h.metadata["version"] for h in kb.search("entry", top_k=40)} == {"8"}


class GatedEmbedder(HashingEmbedder):
    """Blocks ingest-sized embedding calls until released, to hold an ingest mid-way."""

    def __init__(self) -> None:
        super().__init__(256)
        self.entered = threading.Event()
        self.release = threading.Event()

    def embed(self, texts: list[str]) -> np.ndarray:
        if len(texts) > 1:
            self.entered.set()
            assert self.release.wait(10)
        return super().embed(texts)


def test_ingest_does_not_block_searches_while_it_embeds(tmp_path: Path) -> None:
    embedder = GatedEmbedder()
    with KnowledgeBase.open(tmp_path / "kb", embedder, RetrievalSettings()) as kb:
        embedder.release.set()
        kb.ingest(versioned(0))
        embedder.release.clear()
        writer = threading.Thread(target=kb.ingest, args=(versioned(1),))
        writer.start()
        assert embedder.entered.wait(10)
        # The ingest is stuck embedding: searches still answer, from the committed version.
        hits = kb.search("entry version", top_k=5)
        assert {h.metadata["version"] for h in hits} == {"0"}
        embedder.release.set()
        writer.join()
        assert {h.metadata["version"] for h in kb.search("entry version", top_k=5)} == {"1"}


def test_deleting_everything_while_searching_gives_results_or_empty_index(
    open_kb: Callable[..., KnowledgeBase],
) -> None:
    kb = open_kb()
    stop = threading.Event()
    outcomes: set[str] = set()

    def search_forever() -> None:
        while not stop.is_set():
            try:
                hits = kb.search("entry", top_k=3)
                outcomes.add("hits" if hits else "none")
            except EmptyIndexError:
                outcomes.add("empty")

    kb.ingest(versioned(0))
    thread = threading.Thread(target=search_forever)
    thread.start()
    try:
        for version in range(1, 6):
            kb.delete([f"doc{j}" for j in range(DOCS)])
            kb.ingest(versioned(version))
    finally:
        stop.set()
        thread.join()
    assert outcomes <= {"hits", "empty"}


def test_reader_connections_are_pooled_not_kept_per_thread(open_kb: Callable[..., KnowledgeBase]) -> None:
    kb = open_kb()
    kb.ingest(versioned(0))
    for _ in range(20):  # a server may run each request on a fresh thread
        thread = threading.Thread(target=kb.search, args=("entry",))
        thread.start()
        thread.join()
    assert len(kb._docstore._idle_readers) == 1
