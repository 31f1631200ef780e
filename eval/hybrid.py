"""Adapter x retrieval: does the adapter's style survive a context, and does the pair beat its parts?

For every adapter arm ``adapter:NAME`` (an adapter alone: no ``prompt``, no ``fewshot@K``, no
context) whose partner ``adapter:NAME+rag`` / ``adapter:NAME+rag@K`` was run, with retrieval as
the context (never ``oracle``: handing over the gold passages is retrieval's ceiling, not
retrieval), :func:`hybrid_results` reports:

- **style retention under context** = format validity with the context / format validity
  without it (``format_valid``, on the items where both arms have a value); None when the
  adapter alone is never valid. Its interval is the percentile interval of the same ratio over
  the analysis' paired cluster-bootstrap resamples (resamples whose denominator is 0 are left
  out).
- **hybrid gain**, when the context arm alone (``rag`` / ``rag@K``, same K, no adapter) was
  run too: on the primary knowledge metric (``contains``), over the items all three arms define,
  ``mean[adapter+rag] - max(mean[adapter], mean[rag])``. The better part is chosen by those
  means **on the same items the gain is measured on**, ties going to the context arm. The
  interval is the percentile interval of ``mean*[adapter+rag] - max(mean*[adapter], mean*[rag])``
  over the analysis' paired cluster-bootstrap resamples: the better part is chosen again in each
  resample, so the interval accounts for that choice (picking the larger of two noisy means makes
  the gain, if anything, biased low). Computed over all items and within each dataset stratum
  that has knowledge items.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from hybrid_assistant.eval.arms import Arm
from hybrid_assistant.eval.metrics.registry import PRIMARY_KNOWLEDGE, PRIMARY_STYLE
from hybrid_assistant.eval.stats import ClusterBootstrap

#: The scope of the gain over every item.
ALL_ITEMS = "all"


@dataclass
class HybridGain:
    """The hybrid gain on the knowledge metric within one scope (all items, or one stratum)."""

    scope: str  # ALL_ITEMS, or the dataset stratum's label
    n: int  # items with a knowledge value in all three arms
    knowledge_adapter: float
    knowledge_context: float
    knowledge_hybrid: float
    better_part: str  # the arm subtracted: the adapter alone or the context alone
    gain: float
    gain_ci: tuple[float, float]


@dataclass
class HybridResult:
    """One adapter with one retrieval context: style retention and the hybrid gain."""

    adapter: str  # the adapter arm, "adapter:NAME"
    context_arm: str | None  # "rag" / "rag@K" alone; None when that arm was not run
    with_context_arm: str  # "adapter:NAME+rag@K"
    n: int  # items with a format validity in both the adapter arm and its partner
    validity_without: float | None
    validity_with: float | None
    retention: float | None  # None when validity_without is 0 (or there is no validity)
    retention_ci: tuple[float, float] | None
    # The gain over every item; None without the context arm alone or without knowledge items.
    knowledge_adapter: float | None = None
    knowledge_context: float | None = None
    knowledge_hybrid: float | None = None
    better_part: str | None = None
    gain: float | None = None
    gain_ci: tuple[float, float] | None = None
    # The same within each dataset stratum that has knowledge items.
    strata: list[HybridGain] = field(default_factory=list)


def hybrid_pairs(arms: Sequence[Arm]) -> list[tuple[Arm, Arm, Arm | None]]:
    """(adapter alone, adapter with retrieval, retrieval alone or None) for every pair present."""
    by_name = {a.name: a for a in arms}
    pairs = []
    for arm in arms:
        if not arm.adapter or arm.prompted or arm.context != "none":
            continue
        for partner in arms:
            if partner.retrieval and partner.style_lever == arm.name:
                pairs.append((arm, partner, by_name.get(partner.context_label)))
    return pairs


def _paired(*columns: np.ndarray) -> list[np.ndarray]:
    """The columns with NaN wherever any of them is NaN."""
    common = ~np.any(np.isnan(np.vstack(columns)), axis=0)
    return [np.where(common, c, np.nan) for c in columns]


def _ratio_ci(
    numerator: np.ndarray, denominator: np.ndarray, boot: ClusterBootstrap
) -> tuple[float, float] | None:
    num = boot.resampled_means(numerator)
    den = boot.resampled_means(denominator)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    low, high = boot.percentile_interval(ratio)
    return None if np.isnan(low) else (low, high)


def _gain(
    scope: str,
    adapter: str,
    context: str,
    columns: tuple[np.ndarray, np.ndarray, np.ndarray],
    boot: ClusterBootstrap,
) -> HybridGain | None:
    alone, retrieved, both = _paired(*columns)
    defined = ~np.isnan(both)
    if not defined.any():
        return None
    means = [float(c[defined].mean()) for c in (alone, retrieved, both)]
    # The better part on these same items; a tie goes to the context alone.
    better = adapter if means[0] > means[1] else context
    # The same resamples for all three arms (paired), the better part re-chosen in each.
    star = [boot.resampled_means(c) for c in (alone, retrieved, both)]
    low, high = boot.percentile_interval(star[2] - np.maximum(star[0], star[1]))
    return HybridGain(
        scope=scope,
        n=int(defined.sum()),
        knowledge_adapter=means[0],
        knowledge_context=means[1],
        knowledge_hybrid=means[2],
        better_part=better,
        gain=means[2] - max(means[0], means[1]),
        gain_ci=(low, high),
    )


def hybrid_results(
    values: dict[str, dict[str, np.ndarray]],
    arms: Sequence[Arm],
    boot: ClusterBootstrap,
    strata: Sequence[str],
) -> list[HybridResult]:
    """Retention and gain for every pair of :func:`hybrid_pairs`.

    ``values``: metric -> arm -> one value per item (NaN where the metric does not apply), as
    the analysis scores them; ``strata``: each item's dataset stratum; ``boot``: the analysis'
    bootstrap over the same items (subset per stratum).
    """
    out = []
    for alone, partner, context in hybrid_pairs(arms):
        without, with_ = _paired(values[PRIMARY_STYLE][alone.name], values[PRIMARY_STYLE][partner.name])
        defined = ~np.isnan(without)
        n = int(defined.sum())
        v_without = float(without[defined].mean()) if n else None
        v_with = float(with_[defined].mean()) if n else None
        retention = v_with / v_without if v_without and v_with is not None else None
        result = HybridResult(
            adapter=alone.name,
            context_arm=context.name if context else None,
            with_context_arm=partner.name,
            n=n,
            validity_without=v_without,
            validity_with=v_with,
            retention=retention,
            retention_ci=_ratio_ci(with_, without, boot) if retention is not None else None,
        )
        if context is not None:
            knowledge = values[PRIMARY_KNOWLEDGE]
            columns = (knowledge[alone.name], knowledge[context.name], knowledge[partner.name])
            overall = _gain(ALL_ITEMS, alone.name, context.name, columns, boot)
            if overall is not None:
                result.knowledge_adapter = overall.knowledge_adapter
                result.knowledge_context = overall.knowledge_context
                result.knowledge_hybrid = overall.knowledge_hybrid
                result.better_part = overall.better_part
                result.gain = overall.gain
                result.gain_ci = overall.gain_ci
            labels = np.asarray(strata, dtype=object)
            for label in dict.fromkeys(strata):
                mask = labels == label
                sub = tuple(c[mask] for c in columns)
                gain = _gain(label, alone.name, context.name, (sub[0], sub[1], sub[2]), boot.subset(mask))
                if gain is not None:
                    result.strata.append(gain)
        out.append(result)
    return out
