"""Number formatting and the row data shared by the terminal, Markdown and HTML reports."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hybrid_assistant.eval.analysis import EvalAnalysis, FactorialResult
    from hybrid_assistant.eval.stats import Effect, Estimate

#: Columns of the summary table, in order, when the metric is present.
SUMMARY_METRICS: tuple[str, ...] = (
    "contains",
    "f1",
    "exact_match",
    "option_acc",
    "abstained",
    "refused",
    "format_valid",
    "style_similarity",
    "retrieval_hit",
)

EFFECT_LABELS = {
    "context": "{context} effect",
    "lever": "{lever} effect",
    "interaction": "interaction",
    "context_without_lever": "{context}, without {lever}",
    "context_with_lever": "{context}, with {lever}",
    "lever_without_context": "{lever}, without {context}",
    "lever_with_context": "{lever}, with {context}",
}
MAIN_EFFECTS = ("context", "lever", "interaction")
SIMPLE_EFFECTS = (
    "context_without_lever",
    "context_with_lever",
    "lever_without_context",
    "lever_with_context",
)


def context_word(context: str) -> str:
    return "oracle context" if context == "oracle" else "retrieval" if context.startswith("rag") else context


def effect_label(key: str, context: str, lever: str) -> str:
    """``retrieval effect``, ``adapter:style effect``, ``prompt, with retrieval``..."""
    return EFFECT_LABELS.get(key, key).format(context=context_word(context), lever=lever)


def num(value: float | None, digits: int = 2, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _interval(value: float, low: float, high: float, signed: bool) -> str:
    return f"{num(value, signed=signed)} [{num(low, signed=signed)}, {num(high, signed=signed)}]"


def estimate_text(est: Estimate) -> str:
    """``0.62 [0.55, 0.70]``: the mean and its 95% interval."""
    return _interval(est.mean, est.ci_low, est.ci_high, signed=False)


def effect_text(eff: Effect) -> str:
    """``+0.12 [+0.05, +0.20]``: the effect and its 95% interval."""
    return _interval(eff.estimate, eff.ci_low, eff.ci_high, signed=True)


def p_value(p: float | None) -> str:
    if p is None or not math.isfinite(p):
        return "–"
    if p < 0.001:
        return "<0.001"
    return f"{p:.3f}"


def _p_relation(p: float | None) -> str:
    text = p_value(p)
    return f"< {text[1:]}" if text.startswith("<") else f"= {text}"


def summary_columns(analysis: EvalAnalysis) -> list[str]:
    present = {m for arm in analysis.arms for m in arm.metrics}
    return [m for m in SUMMARY_METRICS if m in present]


def reading(result: FactorialResult, key: str) -> str:
    """One honest sentence about an effect: its size, its interval, and whether it is distinguishable."""
    eff = result.effects[key]
    label = effect_label(key, result.context, result.lever)
    if eff.n == 0 or not math.isfinite(eff.estimate):
        return f"{label} on {result.metric}: no data."
    head = (
        f"{label} on {result.metric} ({result.set}): {num(eff.estimate, signed=True)} "
        f"(95% CI {num(eff.ci_low, signed=True)} to {num(eff.ci_high, signed=True)}, "
        f"p {_p_relation(eff.p_value)}, n = {eff.n})"
    )
    if eff.ci_low <= 0 <= eff.ci_high:
        mde = f"; effects smaller than about {num(eff.mde)} would likely go unseen" if eff.mde else ""
        return f"{head}: not distinguishable from zero at this sample size{mde}."
    return f"{head}."


def findings(analysis: EvalAnalysis) -> list[str]:
    """Readings of the main effects on the primary knowledge and style metrics, per 2x2."""
    primary = (analysis.meta["primary_knowledge"], analysis.meta["primary_style"])
    out = []
    for result in analysis.factorial:
        if result.metric in primary:
            out += [reading(result, key) for key in MAIN_EFFECTS]
    return out
