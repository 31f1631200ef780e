from __future__ import annotations

import pytest

from hybrid_assistant.retrieval.fusion import max_fused_score, reciprocal_rank_fusion


def test_rrf_scores_are_sums_of_reciprocal_ranks() -> None:
    fused = dict(reciprocal_rank_fusion([["a", "b", "c"], ["c", "a"]], k=60))
    assert fused["a"] == pytest.approx(1 / 61 + 1 / 62)
    assert fused["b"] == pytest.approx(1 / 62)
    assert fused["c"] == pytest.approx(1 / 63 + 1 / 61)


def test_rrf_rewards_agreement_between_lists() -> None:
    # "x" is only second in each list but beats items that top one list and miss the other.
    fused = reciprocal_rank_fusion([["d1", "x", "d3"], ["l1", "x", "l3"]], k=60)
    assert fused[0][0] == "x"


def test_rrf_ties_keep_first_seen_order_and_k_is_validated() -> None:
    assert [item for item, _ in reciprocal_rank_fusion([["a"], ["b"]])] == ["a", "b"]
    assert reciprocal_rank_fusion([[], []]) == []
    with pytest.raises(ValueError, match="0"):
        reciprocal_rank_fusion([["a"]], k=0)


def test_max_fused_score_is_first_in_every_list() -> None:
    fused = reciprocal_rank_fusion([["a"], ["a"]], k=10)
    assert fused[0][1] == pytest.approx(max_fused_score(2, k=10))
