"""Retrieval metrics for arms that search the index, given the document ids placed in the prompt.

- ``retrieval_hit``: at least one gold document was among the contexts;
- ``recall_at_k``: the fraction of distinct gold documents among the first ``k`` contexts
  (all of them when ``k`` is None);
- the four-way split (:func:`four_way_split`) crosses the hit with a binary correctness metric:
  retrieved & right, retrieved & still wrong (a generation failure), missed & right anyway (the
  model knew, or guessed), missed & wrong (a retrieval failure).

Only items with gold documents are scored; the others have no retrieval target.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


def retrieval_hit(contexts: Sequence[str], gold: Sequence[str]) -> float:
    """1.0 if any gold document id is among the contexts."""
    return float(bool(set(contexts) & set(gold)))


def recall_at_k(contexts: Sequence[str], gold: Sequence[str], k: int | None = None) -> float:
    """Fraction of the distinct gold documents found among the first ``k`` contexts."""
    if not gold:
        raise ValueError("recall_at_k needs at least one gold document")
    if k is not None and k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    found = set(contexts if k is None else contexts[:k])
    wanted = set(gold)
    return len(found & wanted) / len(wanted)


def retrieval_scores(contexts: Sequence[str], gold: Sequence[str], k: int | None = None) -> dict[str, float]:
    """``retrieval_hit`` and ``recall_at_k``; empty when the item has no gold documents."""
    if not gold:
        return {}
    return {"retrieval_hit": retrieval_hit(contexts, gold), "recall_at_k": recall_at_k(contexts, gold, k)}


@dataclass(frozen=True)
class FourWaySplit:
    """Counts of items by (gold retrieved?, answer right?)."""

    retrieved_right: int
    retrieved_wrong: int
    missed_right: int
    missed_wrong: int

    @property
    def total(self) -> int:
        return self.retrieved_right + self.retrieved_wrong + self.missed_right + self.missed_wrong

    def fractions(self) -> dict[str, float]:
        total = self.total or 1
        return {
            "retrieved_right": self.retrieved_right / total,
            "retrieved_wrong": self.retrieved_wrong / total,
            "missed_right": self.missed_right / total,
            "missed_wrong": self.missed_wrong / total,
        }


def four_way_split(hits: Sequence[bool], correct: Sequence[bool]) -> FourWaySplit:
    """Cross retrieval hits with correctness, item by item."""
    if len(hits) != len(correct):
        raise ValueError(f"{len(hits)} hits but {len(correct)} correctness values")
    pairs = list(zip(hits, correct, strict=True))
    return FourWaySplit(
        retrieved_right=sum(1 for h, c in pairs if h and c),
        retrieved_wrong=sum(1 for h, c in pairs if h and not c),
        missed_right=sum(1 for h, c in pairs if not h and c),
        missed_wrong=sum(1 for h, c in pairs if not h and not c),
    )
