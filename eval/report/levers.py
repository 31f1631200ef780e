"""Report sections on the choice of lever: head to head, cost per arm with break-even, training
curves, and the closing decision.

They read ``analysis.lever_comparisons``, and the JSON-ready ``analysis.costs`` (arm -> the
cost probe's :meth:`eval.cost.ArmCost.to_dict`) and ``analysis.decision``
(:meth:`eval.decision.Decision.to_dict`); a section whose numbers are absent says so, or is
left out.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hybrid_assistant.eval.arms import parse_arm
from hybrid_assistant.eval.report.blocks import Image, Section, Table
from hybrid_assistant.eval.report.formatting import effect_text, num, p_value
from hybrid_assistant.eval.report.training_curves import plot_training_curves

if TYPE_CHECKING:
    from hybrid_assistant.eval.analysis import EvalAnalysis


def _costs(analysis: EvalAnalysis) -> Mapping[str, Mapping[str, Any]]:
    return analysis.costs


def _decision(analysis: EvalAnalysis) -> Mapping[str, Any]:
    return analysis.decision


def head_to_head(analysis: EvalAnalysis) -> Section:
    """Every two style levers with the same context, paired by item."""
    rows = [
        [
            c.arm,
            c.baseline,
            c.metric,
            effect_text(c.effect),
            p_value(c.effect.p_value),
            num(c.effect.mde),
            str(c.effect.n),
        ]
        for c in analysis.lever_comparisons
    ]
    section = Section("Head to head: style levers with the same context")
    if not rows:
        section.paragraphs.append("No two style levers (adapter, prompt, few-shot) share a context.")
        return section
    headers = ["arm", "minus", "metric", "difference [95% CI]", "p", "MDE", "n"]
    section.tables.append(Table(headers, rows, "paired by item: arm minus the other lever, same context"))
    return section


def _seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f} s"


COST_HEADERS = [
    "arm",
    "prompt tok (mean)",
    "TTFT p50 ms",
    "latency p50 ms",
    "answers/s",
    "one-time training",
    "asked",
]


def cost_rows(analysis: EvalAnalysis) -> list[list[str]]:
    """One row per probed arm, under :data:`COST_HEADERS` (none without a probe)."""
    rows = []
    for arm, c in _costs(analysis).items():
        one_time = _seconds(c.get("train_s")) if parse_arm(arm).adapter else "none"
        rows.append(
            [
                arm,
                num(c.get("prompt_tokens_mean"), 1),
                num(c.get("ttft_p50_ms"), 0),
                num(c.get("latency_p50_ms"), 0),
                num(c.get("answers_per_s"), 2),
                one_time,
                f"{c.get('n', 0)} ({c.get('errors', 0)} failed)",
            ]
        )
    return rows


def cost_section(analysis: EvalAnalysis) -> Section:
    """The cost probe per arm, and each adapter's break-even against the prompt arms."""
    costs = _costs(analysis)
    section = Section("Cost per arm")
    if not costs:
        section.paragraphs.append("No cost probe in this run: no per-request prices or break-even.")
        return section
    first = next(iter(costs.values()))
    caption = (
        f"cost probe: the same {first.get('n', 0)} items through each arm in turn, uncached, at "
        f"concurrency {first.get('concurrency', '?')}; training time from the adapter's metadata"
    )
    section.tables.append(Table(COST_HEADERS, cost_rows(analysis), caption))
    return section


def break_even_section(analysis: EvalAnalysis) -> Section | None:
    """Each adapter's break-even against the prompt arms; None without a cost probe."""
    if not _costs(analysis):
        return None
    lines = [b["text"] for b in _decision(analysis).get("break_even", [])]
    return Section(
        "Break-even: adapter vs prompt",
        paragraphs=[
            "After how many requests an adapter's training time is repaid by the time it saves per "
            "request over the cheapest prompt arm (same context) whose format validity is not "
            "significantly lower (paired difference, upper bound of its interval >= 0); the interval "
            "comes from a paired bootstrap of the per-request latency difference in the cost probe."
        ],
        bullets=lines or ["No adapter arm to price."],
    )


def training_curves_section(analysis: EvalAnalysis) -> Section | None:
    """Per-step training loss with epoch boundaries and validation loss, when the metadata has them."""
    adapters = analysis.meta.get("adapters", {})
    if not adapters:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = plot_training_curves(adapters, Path(tmp) / "training_curves.png")
        if path is None:
            return None
        png = path.read_bytes()
    return Section(
        "Training curves",
        paragraphs=[
            "Training loss per optimiser step, epoch boundaries as vertical lines, validation loss per "
            "epoch: a loss that drops in steps at each boundary while validation does not is memorisation."
        ],
        images=[Image("training_curves", png, "adapter training curves")],
    )


def decision_section(analysis: EvalAnalysis) -> Section:
    """The closing recommendation, for knowledge and for style, with its caveats."""
    decision = _decision(analysis)
    section = Section("Decision")
    recommendations = decision.get("recommendations", [])
    if not recommendations:
        section.paragraphs.append("No decision computed for this run.")
        return section
    section.paragraphs.append(
        "Computed from the measured numbers only: for each goal, the arms whose difference from base "
        "has an interval above 0 and an estimate within the MDE of the best; the cheapest per request "
        "(cost probe latency, else tokens) wins, ties to the lower one-time cost, then the simpler arm. "
        "On probe latency an arm ties with the cheapest when the paired interval of its extra latency "
        "reaches 0."
    )
    for rec in recommendations:
        section.paragraphs.append(rec["text"])
        section.bullets += [f"{rec['goal']}: {caveat}" for caveat in rec.get("caveats", [])]
    section.bullets += [b["text"] for b in decision.get("break_even", [])]
    return section


def decision_lines(analysis: EvalAnalysis) -> list[str]:
    """The decision as plain lines for the console (empty when none was computed)."""
    decision = _decision(analysis)
    lines = []
    for rec in decision.get("recommendations", []):
        lines.append(f"decision: {rec['text']}")
        lines += [f"  caveat: {caveat}" for caveat in rec.get("caveats", [])]
    lines += [f"break-even: {b['text']}" for b in decision.get("break_even", [])]
    return lines
