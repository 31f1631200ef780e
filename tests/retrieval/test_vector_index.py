"""One contract for the three index types (flat, ivf, hnsw), run against each by the
``index_type`` fixture, on synthetic vectors whose nearest neighbours are known."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hybrid_assistant.retrieval import RetrievalSettings
from hybrid_assistant.retrieval.vector_index import VectorIndex, auto_nlist
from tests.retrieval.conftest import INDEX_SETTINGS, clustered_vectors

DIM = 32


def build(
    index_type: str, count: int = 400, **overrides: object
) -> tuple[VectorIndex, np.ndarray, np.ndarray]:
    settings = RetrievalSettings(**{**INDEX_SETTINGS[index_type], **overrides})
    vectors = clustered_vectors(count, DIM, clusters=20)
    ids = np.arange(1000, 1000 + count, dtype=np.int64)
    return (
        VectorIndex.build(DIM, settings, [(ids[:150], vectors[:150]), (ids[150:], vectors[150:])]),
        ids,
        vectors,
    )


def test_a_stored_vector_finds_itself_then_its_cluster(index_type: str) -> None:
    index, ids, vectors = build(index_type)
    scores, found = index.search(vectors[:20], k=5)
    assert (found[:, 0] == ids[:20]).all()
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-4)
    # Rows i, i+20, i+40... share a cluster, so every hit is a cluster mate.
    assert ((found - 1000) % 20 == (np.arange(20) % 20)[:, None]).all()
    assert (np.diff(scores, axis=1) <= 1e-6).all(), "best first"


def test_ids_are_stable_through_removal_and_addition(index_type: str) -> None:
    index, ids, vectors = build(index_type)
    index.apply(np.zeros(0, np.int64), np.zeros((0, DIM), np.float32), ids[:10])
    assert index.live == 390
    _, found = index.search(vectors[:10], k=3)
    assert not np.isin(found, ids[:10]).any(), "removed ids are never returned"
    new_ids = np.array([5000, 5001], dtype=np.int64)
    index.apply(new_ids, vectors[:2], np.zeros(0, np.int64))
    _, found = index.search(vectors[:2], k=1)
    assert found[:, 0].tolist() == [5000, 5001]
    index.apply(np.zeros(0, np.int64), np.zeros((0, DIM), np.float32), np.array([424242]))  # unknown: no-op
    assert index.live == 392


def test_every_vector_keeps_its_own_id_through_repeated_removals(index_type: str, tmp_path: Path) -> None:
    # IVF behind IndexIDMap2 returned neighbours' ids after one removal and aborted the process
    # (FAISS assertion) on a later one; every survivor must still find exactly itself.
    index, ids, vectors = build(index_type)
    index = VectorIndex.load(index.save(tmp_path, generation=1), DIM, index.settings)
    none = np.zeros(0, np.int64), np.zeros((0, DIM), np.float32)
    index.apply(*none, ids[5:15])
    index.apply(ids[:3] + 9000, vectors[:3], ids[200:210])
    index.apply(*none, ids[390:])
    keep = np.setdiff1d(np.arange(len(ids)), np.r_[5:15, 200:210, 390:400])
    _, found = index.search(vectors[keep], k=1)
    np.testing.assert_array_equal(found[:, 0], ids[keep])
    assert sorted(np.setdiff1d(index.ids(), list(index._tombstones)).tolist()) == sorted(
        [*ids[keep].tolist(), *(ids[:3] + 9000).tolist()]
    )


def test_allowed_ids_restrict_the_search(index_type: str) -> None:
    index, ids, vectors = build(index_type)
    allowed = ids[ids % 2 == 0][:100]
    _, found = index.search(vectors[1:2], k=5, allowed=allowed)
    hits = found[0][found[0] >= 0]
    assert len(hits)
    assert np.isin(hits, allowed).all()


def test_save_and_load_round_trip(index_type: str, tmp_path: Path) -> None:
    index, _, vectors = build(index_type)
    path = index.save(tmp_path, generation=7)
    assert path.name == f"vectors-g7-{index.settings.index_build_key()}.faiss"
    assert VectorIndex.find_saved(tmp_path, index.settings) == (path, 7)
    loaded = VectorIndex.load(path, DIM, index.settings)
    np.testing.assert_array_equal(loaded.search(vectors[:5], 4)[1], index.search(vectors[:5], 4)[1])
    assert sorted(loaded.ids().tolist()) == sorted(index.ids().tolist())
    index.save(tmp_path, generation=8)
    assert [p.name for p in tmp_path.iterdir()] == [index.file_name(8)], "older files are removed"


def test_k_larger_than_the_index_returns_what_exists(index_type: str) -> None:
    index, ids, vectors = build(index_type, count=30)
    _, found = index.search(vectors[:1], k=100)
    assert sorted(found[0][found[0] >= 0].tolist()) == sorted(ids.tolist())


def test_ivf_stays_exact_until_trained_then_retrains_on_growth() -> None:
    small, _, _ = build("ivf", count=100)
    assert not small.trained
    assert small.description.startswith("ivf (untrained")
    assert small.needs_rebuild(adds=100, removes=0), "crossing the threshold trains"
    big, _, _ = build("ivf", count=400)
    assert big.trained
    assert big.trained_size == 400
    assert not big.needs_rebuild(adds=100, removes=0)
    assert big.needs_rebuild(adds=3000, removes=0), "grown 8x since training"


def test_hnsw_masks_deletions_and_asks_for_compaction() -> None:
    index, ids, _ = build("hnsw", count=100)
    index.apply(np.zeros(0, np.int64), np.zeros((0, DIM), np.float32), ids[:15])
    assert index.stored == 100
    assert index.live == 85
    assert not index.needs_rebuild(adds=0, removes=0)
    assert index.needs_rebuild(adds=0, removes=10), "25% masked > 20%"
    copy = index.copy()
    assert copy.live == 85
    assert copy is not index


def test_auto_nlist_keeps_enough_points_per_cell() -> None:
    assert auto_nlist(1_000_000, None) == 1000
    assert auto_nlist(10_000, None) == 100
    assert auto_nlist(1000, 4096) == 25
    assert auto_nlist(5, None) == 1
