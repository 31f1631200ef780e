"""The overview's "Hybrid: adapter × retrieval" tables: style retention under retrieval and the
hybrid gain over the better of the two parts (:mod:`eval.hybrid`), left out without such pairs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hybrid_assistant.eval.report.blocks import Table
from hybrid_assistant.eval.report.formatting import num

if TYPE_CHECKING:
    from hybrid_assistant.eval.analysis import EvalAnalysis

HYBRID_TITLE = "Hybrid: adapter × retrieval"
HYBRID_HEADERS = [
    "adapter",
    "with",
    "validity without",
    "validity with",
    "retention [95% CI]",
    "hybrid gain [95% CI]",
    "better part",
]
HYBRID_STRATUM_HEADERS = [
    "adapter",
    "with",
    "stratum",
    "adapter alone",
    "retrieval alone",
    "both",
    "better part",
    "hybrid gain [95% CI]",
]
HYBRID_FOOTNOTE = (
    "retention = format validity with retrieval ÷ without, on the items both arms define (bootstrap "
    "interval of the ratio; – when the adapter alone is never valid); hybrid gain = {metric} of "
    "adapter+retrieval minus the better of adapter alone and retrieval alone (– without the retrieval "
    "arm alone). The better part is chosen by its mean on these same items; the interval re-makes "
    "that choice in every paired bootstrap resample, so it accounts for it."
)


def _ci(value: float | None, ci: tuple[float, float] | None, signed: bool) -> str:
    if value is None:
        return "–"
    text = num(value, signed=signed)
    if ci is None:
        return text
    return f"{text} [{num(ci[0], signed=signed)}, {num(ci[1], signed=signed)}]"


def hybrid_rows(analysis: EvalAnalysis) -> list[list[str]]:
    """One row per adapter and retrieval partner, under :data:`HYBRID_HEADERS`."""
    return [
        [
            h.adapter,
            h.with_context_arm,
            num(h.validity_without),
            num(h.validity_with),
            _ci(h.retention, h.retention_ci, signed=False),
            _ci(h.gain, h.gain_ci, signed=True),
            h.better_part or "–",
        ]
        for h in analysis.hybrids
    ]


def hybrid_stratum_rows(analysis: EvalAnalysis) -> list[list[str]]:
    """The gain within each dataset stratum, under :data:`HYBRID_STRATUM_HEADERS`."""
    return [
        [
            h.adapter,
            h.with_context_arm,
            f"{g.scope} (n={g.n})",
            num(g.knowledge_adapter),
            num(g.knowledge_context),
            num(g.knowledge_hybrid),
            g.better_part,
            _ci(g.gain, g.gain_ci, signed=True),
        ]
        for h in analysis.hybrids
        for g in h.strata
    ]


def hybrid_footnote(analysis: EvalAnalysis) -> str:
    return HYBRID_FOOTNOTE.format(metric=analysis.meta["primary_knowledge"])


def hybrid_tables(analysis: EvalAnalysis) -> list[Table]:
    """The hybrid table and the gain per stratum; none when no adapter has a retrieval partner."""
    if not analysis.hybrids:
        return []
    tables = [Table(HYBRID_HEADERS, hybrid_rows(analysis), f"{HYBRID_TITLE}: {hybrid_footnote(analysis)}")]
    strata = hybrid_stratum_rows(analysis)
    if strata:
        metric = analysis.meta["primary_knowledge"]
        caption = f"{HYBRID_TITLE}: {metric} per dataset stratum, and the hybrid gain within it"
        tables.append(Table(HYBRID_STRATUM_HEADERS, strata, caption))
    return tables
