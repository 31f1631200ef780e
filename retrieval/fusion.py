"""Reciprocal rank fusion of ranked lists (Cormack, Clarke & Büttcher, SIGIR 2009)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TypeVar

K = TypeVar("K", bound=Hashable)

DEFAULT_RRF_K = 60


def reciprocal_rank_fusion(rankings: Sequence[Sequence[K]], k: int = DEFAULT_RRF_K) -> list[tuple[K, float]]:
    """Fuse best-first rankings: ``score(d) = Σ 1 / (k + rank(d))`` with ranks from 1.

    Returns ``(item, score)`` best first. Ties keep the order in which items were first seen
    (earlier lists, better ranks first), so the result is deterministic.
    """
    if k < 1:
        raise ValueError(f"rrf k must be at least 1, got {k}")
    scores: dict[K, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    # sorted() is stable, so equal scores stay in first-seen order.
    return sorted(scores.items(), key=lambda pair: -pair[1])


def max_fused_score(lists: int, k: int = DEFAULT_RRF_K) -> float:
    """The score of an item ranked first in every one of ``lists`` lists."""
    return lists / (k + 1)
