"""The report as a renderer-neutral document: sections of paragraphs, lists, tables and images.

Markdown and HTML render the same document, so they always say the same thing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hybrid_assistant.eval.metrics.knowledge import REFUSAL_PHRASES
from hybrid_assistant.eval.report import plots
from hybrid_assistant.eval.report.blocks import Image, Section, Table
from hybrid_assistant.eval.report.formatting import (
    MAIN_EFFECTS,
    SIMPLE_EFFECTS,
    effect_label,
    effect_text,
    estimate_text,
    findings,
    num,
    p_value,
    summary_columns,
)
from hybrid_assistant.eval.report.hybrid import hybrid_tables
from hybrid_assistant.eval.report.levers import (
    break_even_section,
    cost_section,
    decision_section,
    head_to_head,
    training_curves_section,
)

if TYPE_CHECKING:
    from hybrid_assistant.eval.analysis import EvalAnalysis, StratumResult

MARKDOWN_DISAGREEMENT_LIMIT = 50
STRATUM_METRICS = ("contains", "f1", "exact_match", "option_acc", "abstained", "refused", "format_valid")


def _summary(analysis: EvalAnalysis) -> Table:
    cols = summary_columns(analysis)
    rows = [
        [a.arm] + [estimate_text(a.metrics[m]) if m in a.metrics else "" for m in cols] for a in analysis.arms
    ]
    return Table(["arm", *cols], rows, "mean [95% paired cluster-bootstrap interval]")


def _effect_rows(analysis: EvalAnalysis, keys: tuple[str, ...] | None = None) -> list[list[str]]:
    rows = []
    for r in analysis.factorial:
        for key, eff in r.effects.items():
            if keys is not None and key not in keys:
                continue
            rows.append(
                [
                    r.set,
                    r.metric,
                    effect_label(key, r.context, r.lever),
                    effect_text(eff),
                    p_value(eff.p_value),
                    eff.test,
                    num(eff.mde),
                    str(eff.n),
                ]
            )
    return rows


EFFECT_HEADERS = ["2x2", "metric", "effect", "estimate [95% CI]", "p", "test", "MDE", "n"]


def _stratum_table(stratum: StratumResult, cols: list[str]) -> Table:
    rows = []
    for arm, metrics in stratum.metrics.items():
        rows.append([arm] + [estimate_text(metrics[m]) if m in metrics else "" for m in cols])
    return Table(["arm", *cols], rows, f"{stratum.scheme}: {stratum.stratum} (n = {stratum.n_items})")


def _strata_tables(analysis: EvalAnalysis) -> list[Table]:
    cols = [c for c in STRATUM_METRICS if c in summary_columns(analysis)]
    return [
        _stratum_table(s, [c for c in cols if any(c in m for m in s.metrics.values())])
        for s in analysis.strata
    ]


def _stratum_effects(analysis: EvalAnalysis) -> Table:
    rows = []
    for s in analysis.strata:
        for r in s.factorial:
            for key in MAIN_EFFECTS:
                eff = r.effects[key]
                rows.append(
                    [
                        f"{s.scheme}: {s.stratum}",
                        r.set,
                        r.metric,
                        effect_label(key, r.context, r.lever),
                        effect_text(eff),
                        p_value(eff.p_value),
                        num(eff.mde),
                        str(eff.n),
                    ]
                )
    headers = ["stratum", "2x2", "metric", "effect", "estimate [95% CI]", "p", "MDE", "n"]
    return Table(headers, rows, "main effects within each stratum (bootstrap within the stratum)")


def _strata_overview(analysis: EvalAnalysis) -> Table:
    """Arms x strata, the correctness metric of each stratum (abstained where nothing is answerable)."""
    primary = analysis.meta["primary_knowledge"]
    strata = analysis.strata
    headers = ["arm"] + [f"{s.stratum} (n={s.n_items})" for s in strata]
    rows = []
    for arm in analysis.meta["arms"]:
        row = [arm]
        for s in strata:
            est = s.metrics[arm].get(primary) or s.metrics[arm].get("abstained")
            row.append(estimate_text(est) if est else "")
        rows.append(row)
    schemes = ", ".join(dict.fromkeys(s.scheme for s in strata))
    caption = f"correct ({primary}; abstained on unanswerable items) per stratum, by {schemes}"
    return Table(headers, rows, caption)


def _operations(analysis: EvalAnalysis) -> Table:
    rows = []
    for a in analysis.arms:
        o = a.operations
        rows.append(
            [
                a.arm,
                str(o.n),
                str(o.errors),
                str(o.truncated),
                num(o.latency_p50_ms, 0),
                num(o.latency_p99_ms, 0),
                num(o.ttft_p50_ms, 0),
                num(o.prompt_tokens_mean, 1),
                num(o.completion_tokens_mean, 1),
            ]
        )
    headers = [
        "arm",
        "n",
        "errors",
        "truncated",
        "latency p50 ms",
        "p99 ms",
        "TTFT p50 ms",
        "prompt tok",
        "completion tok",
    ]
    return Table(headers, rows, "latency and tokens over successful requests")


def _disagreements(analysis: EvalAnalysis, limit: int | None) -> Table:
    arms = analysis.meta["arms"]
    shown = analysis.disagreements if limit is None else analysis.disagreements[:limit]
    rows = []
    for d in shown:
        cells = [f"{'✓' if d.correct[a] else '✗'} {d.answers[a][:80]}" for a in arms]
        tags = " · ".join(t for t in (d.item_id, d.stratum, d.closed_book) if t)
        references = " | ".join(d.references) or "(should abstain)"
        rows.append([f"{tags}\n{d.question}\nreference: {references}", *cells])
    caption = f"{len(analysis.disagreements)} items where arms disagree on correctness"
    if limit is not None and len(analysis.disagreements) > limit:
        caption += f" (first {limit} shown; all are in report.json and report.html)"
    return Table(["item", *arms], rows, caption)


def _method(analysis: EvalAnalysis) -> list[str]:
    meta = analysis.meta
    metric_lines = [f"`{name}`: {info['description']}" for name, info in meta["metrics"].items()]
    return [
        f"Intervals: paired cluster bootstrap, {meta['n_resamples']} resamples (seed {meta['seed']}), "
        f"{meta['n_groups']} clusters (items sharing a source document form one cluster); percentile "
        f"{meta['confidence']:.0%} intervals. Every arm uses the same resamples, so differences are paired.",
        "Effects in a 2x2 (base, style lever L, context C, L+C; L an adapter, prompt or few-shot): C or L "
        "main effect = mean over the other factor's levels of (on - off); interaction = "
        "(L+C - L) - (C - base).",
        "p-values: exact McNemar for a binary metric between two arms; otherwise a two-sided sign-flip "
        "permutation test flipping whole clusters. MDE: the true effect detectable with 80% power by a "
        "two-sided 5% test, 2.80 x the cluster-robust standard error of the paired contrast.",
        "Knowledge is scored on the answer extracted from the styled output (the spec's answer field), so a "
        "format adapter is not scored as ignorant for its format. Refusal phrases: "
        + ", ".join(f"'{p}'" for p in REFUSAL_PHRASES)
        + ".",
        f"Strata: 'known' / 'new' = whether the closed-book '{meta['closed_book_arm']}' arm answered right "
        "(so that arm scores 1 / 0 there by construction); no item is dropped.",
        *metric_lines,
    ]


def build_document(analysis: EvalAnalysis, *, markdown: bool = False) -> list[Section]:
    """The report's sections; ``markdown`` leaves out images and shortens the disagreement list."""
    meta = analysis.meta
    overview = Section(
        "Overview",
        paragraphs=[
            f"{meta['n_items']} items in {meta['n_groups']} clusters, {len(meta['arms'])} arms "
            f"({', '.join(meta['arms'])}); style spec: {meta['style_spec'] or 'none'}.",
            "Strata: " + ", ".join(f"{k} {v}" for k, v in meta["strata_counts"].items()) + ".",
        ],
        bullets=[*findings(analysis), *analysis.notes],
        tables=[_summary(analysis), *hybrid_tables(analysis)],
    )
    if not markdown:
        overview.images.append(
            Image("arms", plots.arm_bars(analysis), "per-arm knowledge and style with intervals")
        )
    effects = Section(
        "Effects (2x2)",
        tables=[Table(EFFECT_HEADERS, _effect_rows(analysis, MAIN_EFFECTS), "main effects and interaction")],
    )
    png = None if markdown else plots.effects_plot(analysis)
    if png:
        effects.images.insert(0, Image("effects", png, "main effects with 95% intervals"))
    if not analysis.factorial:
        effects.paragraphs.append("No complete 2x2 among the arms.")
    simple = Section(
        "Simple effects (one factor at a fixed level of the other)",
        tables=[Table(EFFECT_HEADERS, _effect_rows(analysis, SIMPLE_EFFECTS), "")],
        collapsed=True,
    )
    comparisons = Section(
        f"Each arm against {meta['closed_book_arm']}",
        tables=[
            Table(
                ["arm", "metric", "difference [95% CI]", "p", "test", "MDE", "n"],
                [
                    [
                        c.arm,
                        c.metric,
                        effect_text(c.effect),
                        p_value(c.effect.p_value),
                        c.effect.test,
                        num(c.effect.mde),
                        str(c.effect.n),
                    ]
                    for c in analysis.comparisons
                ],
            )
        ],
        collapsed=True,
    )
    strata = Section(
        "Strata",
        paragraphs=[
            "Dataset strata come from the file; 'known' / 'new' say whether the closed-book "
            f"'{meta['closed_book_arm']}' arm answered the item right, so that arm scores 1 / 0 there by "
            "construction."
        ],
        tables=[_strata_overview(analysis)] if analysis.strata else [],
    )
    png = None if markdown else plots.strata_plot(analysis)
    if png:
        strata.images.append(Image("strata", png, "correctness per stratum"))
    strata_detail = Section(
        "Strata: every metric, and the effects within each stratum",
        tables=[*_strata_tables(analysis), _stratum_effects(analysis)],
        collapsed=True,
    )
    retrieval = Section("Retrieval: four-way split")
    if analysis.retrieval_split:
        keys = ("retrieved_right", "retrieved_wrong", "missed_right", "missed_wrong")
        retrieval.tables.append(
            Table(
                ["arm", "n", *[k.replace("_", " & ") for k in keys]],
                [
                    [s.arm, str(s.n), *[f"{s.counts[k]} ({s.fractions[k]:.0%})" for k in keys]]
                    for s in analysis.retrieval_split
                ],
                "answerable items with gold documents; right = contains",
            )
        )
        png = None if markdown else plots.split_plot(analysis)
        if png:
            retrieval.images.append(Image("split", png, "four-way split"))
    else:
        retrieval.paragraphs.append("No arm searched the index.")
    curves = None if markdown else training_curves_section(analysis)
    break_even = break_even_section(analysis)
    return [
        overview,
        effects,
        simple,
        comparisons,
        head_to_head(analysis),
        strata,
        strata_detail,
        retrieval,
        Section("Latency and tokens", tables=[_operations(analysis)]),
        cost_section(analysis),
        *([break_even] if break_even else []),
        *([curves] if curves else []),
        Section(
            "Disagreements",
            tables=[_disagreements(analysis, MARKDOWN_DISAGREEMENT_LIMIT if markdown else None)],
            collapsed=True,
        ),
        Section("Method", bullets=_method(analysis), collapsed=True),
        decision_section(analysis),
    ]
