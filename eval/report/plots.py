"""Report plots, rendered with matplotlib's Agg canvas (no pyplot, no global state) to PNG bytes."""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from hybrid_assistant.eval.report.formatting import MAIN_EFFECTS, context_word, effect_label

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from hybrid_assistant.eval.analysis import EvalAnalysis
    from hybrid_assistant.eval.stats import Estimate

KNOWLEDGE_BARS = ("contains", "f1", "option_acc", "abstained")
STYLE_BARS = ("format_valid", "style_similarity")
BAR_LABELS = {"abstained": "abstained (unanswerable)", "option_acc": "option_acc (log-likelihood)"}
COLOURS = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C")
SPLIT_COLOURS = {
    "retrieved_right": "#55A868",
    "retrieved_wrong": "#E8A33D",
    "missed_right": "#8FB3DE",
    "missed_wrong": "#C44E52",
}


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def _finite(x: float) -> float:
    return x if math.isfinite(x) else 0.0


def _style_axes(ax: Axes) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="y", color="#e5e5e5", linewidth=0.8)
    ax.set_axisbelow(True)


def _grouped_bars(
    ax: Axes,
    groups: list[str],
    series: dict[str, list[Estimate | None]],
    title: str,
    legend: bool = True,
    ylim: tuple[float, float] | None = (0.0, 1.0),
) -> None:
    width = 0.8 / max(len(series), 1)
    x = np.arange(len(groups))
    for k, (label, ests) in enumerate(series.items()):
        means = [_finite(e.mean) if e else 0.0 for e in ests]
        lows = [max(m - _finite(e.ci_low), 0.0) if e else 0.0 for m, e in zip(means, ests, strict=True)]
        highs = [max(_finite(e.ci_high) - m, 0.0) if e else 0.0 for m, e in zip(means, ests, strict=True)]
        pos = x - 0.4 + width * (k + 0.5)
        ax.bar(pos, means, width * 0.92, label=label, color=COLOURS[k % len(COLOURS)])
        ax.errorbar(pos, means, yerr=[lows, highs], fmt="none", ecolor="#333333", elinewidth=1, capsize=2)
    ax.set_xticks(x, groups, rotation=25, ha="right", fontsize=8)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_title(title, fontsize=10, pad=22 if legend else 6)
    _style_axes(ax)
    if not legend:
        return
    ax.legend(
        fontsize=7,
        frameon=False,
        loc="lower left",
        bbox_to_anchor=(0, 1.0),
        ncols=min(len(series), 8),
        borderaxespad=0.2,
    )


def arm_bars(analysis: EvalAnalysis) -> bytes:
    """Per-arm means with 95% intervals: knowledge metrics (left) and style metrics (right)."""
    arms = [a.arm for a in analysis.arms]
    fig = Figure(figsize=(11, 3.8))
    axes = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    for ax, metrics, title in (
        (axes[0], KNOWLEDGE_BARS, "Knowledge (answer extracted from the styled output)"),
        (axes[1], STYLE_BARS, "Style"),
    ):
        series = {
            BAR_LABELS.get(m, m): [a.metrics.get(m) for a in analysis.arms]
            for m in metrics
            if any(m in a.metrics for a in analysis.arms)
        }
        _grouped_bars(ax, arms, series, title)
    fig.tight_layout()
    return _png(fig)


def effects_plot(analysis: EvalAnalysis) -> bytes | None:
    """Main effects of every 2x2 with 95% intervals: primary knowledge metric left, style right."""
    panels = [
        (analysis.meta["primary_knowledge"], "Knowledge"),
        (analysis.meta["primary_style"], "Style"),
    ]
    sets = list(dict.fromkeys(r.set for r in analysis.factorial))
    if not sets:
        return None
    rows = [(s, key) for s in sets for key in MAIN_EFFECTS]
    fig = Figure(figsize=(11, 0.42 * len(rows) + 1.3))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, (metric, title) in zip(axes, panels, strict=True):
        by_set = {r.set: r for r in analysis.factorial if r.metric == metric}
        for y, (set_name, key) in enumerate(rows):
            result = by_set.get(set_name)
            if result is None or result.effects[key].n == 0:
                continue
            eff = result.effects[key]
            colour = COLOURS[MAIN_EFFECTS.index(key)]
            ax.errorbar(
                [_finite(eff.estimate)],
                [y],
                xerr=[[_finite(eff.estimate - eff.ci_low)], [_finite(eff.ci_high - eff.estimate)]],
                fmt="o",
                color=colour,
                ecolor=colour,
                elinewidth=2,
                capsize=3,
            )
        ax.axvline(0, color="#555555", linewidth=0.8)
        ax.set_xlim(-1.05, 1.05)
        ax.set_title(f"{title}: effect on {metric}", fontsize=10)
        ax.grid(axis="x", color="#e5e5e5", linewidth=0.8)
        ax.spines[["top", "right"]].set_visible(False)
        ax.set_xlabel("difference in mean (95% interval)", fontsize=8)
    labels = []
    for set_name, key in rows:
        result = next(r for r in analysis.factorial if r.set == set_name)
        labels.append(f"{set_name}: {effect_label(key, result.context, result.lever)}")
    axes[0].set_yticks(range(len(rows)), labels, fontsize=8)
    axes[0].invert_yaxis()
    fig.tight_layout()
    return _png(fig)


def strata_plot(analysis: EvalAnalysis) -> bytes | None:
    """Correctness per arm within each stratum: one panel per scheme (dataset labels, known/new)."""
    metric = analysis.meta["primary_knowledge"]
    schemes = list(dict.fromkeys(s.scheme for s in analysis.strata))
    if not schemes:
        return None
    widths = [sum(1 for s in analysis.strata if s.scheme == scheme) for scheme in schemes]
    fig = Figure(figsize=(11, 3.9))
    axes = fig.subplots(1, len(schemes), gridspec_kw={"width_ratios": widths}, squeeze=False)[0]
    titles = {"dataset": "dataset strata", "closed_book": "closed-book strata (known / new)"}
    for ax, scheme in zip(axes, schemes, strict=True):
        strata = [s for s in analysis.strata if s.scheme == scheme]
        labels = [f"{s.stratum}\n(n={s.n_items})" for s in strata]
        # Unanswerable strata are scored by abstention; everything else by the primary metric.
        series = {
            arm: [s.metrics[arm].get(metric) or s.metrics[arm].get("abstained") for s in strata]
            for arm in (a.arm for a in analysis.arms)
        }
        _grouped_bars(ax, labels, series, titles.get(scheme, scheme), legend=False)
        ax.tick_params(axis="x", rotation=0)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("center")
    axes[0].set_ylabel(f"correct ({metric}; abstained if unanswerable)", fontsize=8)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncols=min(len(labels), 8), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return _png(fig)


def split_plot(analysis: EvalAnalysis) -> bytes | None:
    """Stacked four-way split (gold retrieved? x answer right?) per retrieval arm."""
    splits = analysis.retrieval_split
    if not splits:
        return None
    fig = Figure(figsize=(11, 0.45 * len(splits) + 1.2))
    ax = fig.subplots()
    for y, split in enumerate(splits):
        left = 0.0
        for key, colour in SPLIT_COLOURS.items():
            frac = split.fractions[key]
            ax.barh(y, frac, left=left, color=colour, label=key.replace("_", " & ") if y == 0 else None)
            if frac >= 0.06:
                ax.text(
                    left + frac / 2, y, f"{frac:.0%}", ha="center", va="center", fontsize=8, color="white"
                )
            left += frac
    ax.set_yticks(range(len(splits)), [f"{s.arm} (n={s.n})" for s in splits], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_title(f"{context_word('rag').capitalize()}: gold document retrieved? x answer right?", fontsize=10)
    ax.legend(fontsize=7, frameon=False, ncols=4, loc="upper center", bbox_to_anchor=(0.5, -0.12))
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return _png(fig)


def metric_panels(groups: list[str], panels: dict[str, list[Estimate | None]]) -> bytes:
    """One panel per metric: a bar per group (e.g. an experiment's arms) with its 95% interval.

    Each panel scales its own y axis, so metrics on different scales (a 0/1 thumb, a 1-5 rating)
    sit side by side.
    """
    fig = Figure(figsize=(min(11, 1.5 + 3.6 * len(panels)), 3.6))
    axes = fig.subplots(1, max(len(panels), 1), squeeze=False)[0]
    for ax, (metric, estimates) in zip(axes, panels.items(), strict=False):
        _grouped_bars(ax, groups, {metric: estimates}, metric, legend=False, ylim=None)
    fig.tight_layout()
    return _png(fig)


def interval_plot(rows: list[tuple[str, float, float, float]], xlabel: str) -> bytes:
    """Point estimates with 95% intervals, one row each ``(label, estimate, low, high)``, and a
    line at zero: differences from a reference."""
    fig = Figure(figsize=(9, 0.42 * len(rows) + 1.2))
    ax = fig.subplots()
    for y, (_, estimate, low, high) in enumerate(rows):
        colour = COLOURS[y % len(COLOURS)]
        ax.errorbar(
            [_finite(estimate)],
            [y],
            xerr=[[_finite(estimate - low)], [_finite(high - estimate)]],
            fmt="o",
            color=colour,
            ecolor=colour,
            elinewidth=2,
            capsize=3,
        )
    ax.axvline(0, color="#555555", linewidth=0.8)
    ax.set_yticks(range(len(rows)), [label for label, *_ in rows], fontsize=8)
    ax.invert_yaxis()
    ax.grid(axis="x", color="#e5e5e5", linewidth=0.8)
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_xlabel(xlabel, fontsize=8)
    fig.tight_layout()
    return _png(fig)
