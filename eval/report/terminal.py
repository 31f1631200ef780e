"""The console summary: arms x key metrics with intervals, then the main effects."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hybrid_assistant.eval.report.formatting import (
    MAIN_EFFECTS,
    effect_label,
    effect_text,
    estimate_text,
    num,
    p_value,
)
from hybrid_assistant.eval.report.hybrid import (
    HYBRID_HEADERS,
    HYBRID_STRATUM_HEADERS,
    HYBRID_TITLE,
    hybrid_footnote,
    hybrid_rows,
    hybrid_stratum_rows,
)
from hybrid_assistant.eval.report.levers import COST_HEADERS, cost_rows, decision_lines

if TYPE_CHECKING:
    from hybrid_assistant.eval.analysis import EvalAnalysis

TERMINAL_METRICS = ("contains", "f1", "option_acc", "abstained", "format_valid", "style_similarity")


def _grid(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return out


def grid(headers: list[str], rows: list[list[str]]) -> str:
    """A plain-text table: columns padded to their widest cell, a rule under the headers."""
    return "\n".join(_grid(headers, rows))


def terminal_table(analysis: EvalAnalysis) -> str:
    """Plain-text summary for the console (no colours; safe to log)."""
    present = {m for a in analysis.arms for m in a.metrics}
    cols = [m for m in TERMINAL_METRICS if m in present]
    rows = [
        [a.arm]
        + [estimate_text(a.metrics[m]) if m in a.metrics else "" for m in cols]
        + [num(a.operations.latency_p50_ms, 0)]
        for a in analysis.arms
    ]
    meta = analysis.meta
    lines = [
        f"{meta['n_items']} items, {meta['n_groups']} clusters; mean [95% paired cluster-bootstrap interval]",
        *_grid(["arm", *cols, "p50 ms"], rows),
    ]
    primary = (meta["primary_knowledge"], "abstained", meta["primary_style"])
    effect_rows = [
        [
            r.set,
            r.metric,
            effect_label(k, r.context, r.lever),
            effect_text(r.effects[k]),
            p_value(r.effects[k].p_value),
            num(r.effects[k].mde),
        ]
        for r in analysis.factorial
        if r.metric in primary
        for k in MAIN_EFFECTS
    ]
    if effect_rows:
        lines += ["", *_grid(["2x2", "metric", "effect", "estimate [95% CI]", "p", "MDE"], effect_rows)]
    if analysis.hybrids:
        lines += ["", f"{HYBRID_TITLE}:", *_grid(HYBRID_HEADERS, hybrid_rows(analysis))]
        strata = hybrid_stratum_rows(analysis)
        if strata:
            lines += ["", *_grid(HYBRID_STRATUM_HEADERS, strata)]
        lines.append(f"({hybrid_footnote(analysis)})")
    lines += [f"note: {n}" for n in analysis.notes]
    costs = cost_rows(analysis)
    if costs:
        lines += ["", "cost probe:", *_grid(COST_HEADERS, costs)]
    decision = decision_lines(analysis)
    if decision:
        lines += ["", *decision]
    return "\n".join(lines)
