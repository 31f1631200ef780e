"""kill -9 in the middle of ingesting: the reopened knowledge base holds exactly the committed
batches, its FAISS ids equal its docstore's chunk ids, and it is queryable and writable."""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from hybrid_assistant.retrieval import Document, HashingEmbedder, KnowledgeBase, RetrievalSettings
from tests.retrieval.conftest import INDEX_SETTINGS
from tests.retrieval.crash_worker import DOCS_PER_BATCH

REPO = Path(__file__).resolve().parents[2]


def run_and_kill(directory: Path, tag: str, index_type: str, speed: str, rng: random.Random) -> set[int]:
    """Start the worker, kill it a random moment after its n-th commit; return committed batches."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.retrieval.crash_worker", str(directory), tag, index_type, speed],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    committed: set[int] = set()
    wanted = rng.randint(1, 4)
    try:
        while len(committed) < wanted:
            line = process.stdout.readline()
            if not line:
                pytest.fail(
                    f"worker exited early: {process.wait()} {process.stderr.read() if process.stderr else ''}"
                )
            if line.startswith("ingested"):
                committed.add(int(line.split()[1]))
        time.sleep(rng.uniform(0.0, 0.08))
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    # Lines written before the kill still count as committed (the print follows the commit).
    for line in process.stdout.read().splitlines():
        if line.startswith("ingested"):
            committed.add(int(line.split()[1]))
    return committed


def check_consistent(directory: Path, index_type: str) -> Counter[str]:
    settings = RetrievalSettings(chunk_size=150, chunk_overlap=30, **INDEX_SETTINGS[index_type])
    kb = KnowledgeBase.open(directory, HashingEmbedder(64), settings)
    try:
        conn = sqlite3.connect(directory / "docstore.sqlite3")
        batches = Counter(
            row[0] for row in conn.execute("SELECT value FROM document_metadata WHERE key = 'batch'")
        )
        assert set(batches.values()) <= {DOCS_PER_BATCH}, f"a batch was half-committed: {batches}"
        declared = conn.execute("SELECT COALESCE(SUM(chunk_count), 0) FROM documents").fetchone()[0]
        chunk_ids = np.array(
            [r[0] for r in conn.execute("SELECT id FROM chunks ORDER BY id")], dtype=np.int64
        )
        assert declared == len(chunk_ids)
        orphans = "SELECT COUNT(*) FROM chunks WHERE document_id NOT IN (SELECT id FROM documents)"
        assert conn.execute(orphans).fetchone()[0] == 0
        conn.execute("INSERT INTO chunks_fts(chunks_fts) VALUES ('integrity-check')")  # raises if out of step
        conn.close()
        index = kb._index
        live = np.setdiff1d(index.ids(), np.fromiter(index._tombstones, dtype=np.int64))
        np.testing.assert_array_equal(np.sort(live), chunk_ids, "FAISS ids == docstore chunk ids")
        assert kb.stats().chunks == len(chunk_ids)
        if len(chunk_ids):
            for mode in ("dense", "lexical", "hybrid"):
                hits = kb.search("fact concerns topic3", top_k=5, mode=mode)  # type: ignore[arg-type]
                assert hits
                assert all(h.metadata["batch"] in batches for h in hits)
        return batches
    finally:
        kb.close()


@pytest.mark.parametrize(
    ("index_type", "speed"), [("flat", "slow"), ("flat", "fast"), ("ivf", "fast"), ("hnsw", "fast")]
)
def test_kill_9_mid_ingest_leaves_the_last_committed_state(
    tmp_path: Path, index_type: str, speed: str
) -> None:
    rng = random.Random(f"{index_type}-{speed}")
    directory = tmp_path / "kb"
    for run in range(2):  # crash, recover, crash again on the same directory
        tag = f"r{run}"
        committed = run_and_kill(directory, tag, index_type, speed, rng)
        batches = check_consistent(directory, index_type)
        last = max(committed)
        assert batches[f"{tag}-{last}"] == DOCS_PER_BATCH, "the last reported commit is durable"
    settings = RetrievalSettings(chunk_size=150, chunk_overlap=30, **INDEX_SETTINGS[index_type])
    with KnowledgeBase.open(directory, HashingEmbedder(64), settings) as kb:
        summary = kb.ingest([Document("after", "Recovered and writable again.")])
        assert summary.added == 1
        assert kb.search("recovered writable", top_k=1, mode="lexical")[0].document_id == "after"
