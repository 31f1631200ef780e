"""An experiment report for people: the terminal table and one self-contained HTML page with plots.

The numbers come from :mod:`hybrid_assistant.server.experiments.report`; formatting, plots and
the page shell are the eval's (:mod:`eval.report`), so offline and online reports read the same way.
"""

from __future__ import annotations

from hybrid_assistant.eval.report import plots
from hybrid_assistant.eval.report.document import Image, Section, Table
from hybrid_assistant.eval.report.formatting import estimate_text, num, p_value
from hybrid_assistant.eval.report.html import render_page
from hybrid_assistant.eval.report.terminal import grid
from hybrid_assistant.server.experiments.report import (
    BOOTSTRAP_MAX_SUBJECTS,
    ArmResult,
    ExperimentReport,
    MetricResult,
)

METHOD = [
    "Only requests served while the experiment was running count; requests served while it was "
    "paused or stopped got the control arm and are left out (counted as excluded).",
    "Means have 95% cluster-bootstrap intervals, resampling subjects (a subject's feedback is not "
    "independent).",
    "Differences from the control: interval from independent bootstrap resamples of the two arms; "
    "p-value from a two-sided permutation test that deals whole subjects between the two arms.",
    f"Past {BOOTSTRAP_MAX_SUBJECTS:,} subjects in an arm: mean +- 1.96 cluster-robust standard errors "
    "and a z-test instead "
    "(the bootstrap's cost grows with resamples x subjects; the normal approximation is exact enough).",
    "Latency and tokens are over successful requests; errors are counted in requests.",
]


def _diff_text(m: MetricResult) -> str:
    return f"{num(m.diff, signed=True)} [{num(m.diff_low, signed=True)}, {num(m.diff_high, signed=True)}]"


def _arm_label(arm: ArmResult) -> str:
    return f"{arm.arm} (control)" if arm.control else arm.arm


def traffic_table(report: ExperimentReport) -> Table:
    rows = [
        [
            _arm_label(a),
            num(a.weight, 2),
            str(a.requests),
            str(a.errors),
            str(a.subjects),
            num(a.latency_p50_ms, 0),
            num(a.latency_p99_ms, 0),
            num(a.mean_completion_tokens, 1),
        ]
        for a in report.arms
    ]
    headers = ["arm", "weight", "requests", "errors", "subjects", "p50 ms", "p99 ms", "tokens"]
    return Table(headers, rows, "traffic while running; latency and completion tokens of successful requests")


def metrics_table(report: ExperimentReport) -> Table:
    rows = [
        [
            m.metric,
            _arm_label(a),
            str(m.estimate.n),
            str(m.estimate.n_groups),
            estimate_text(m.estimate),
            "" if a.control else _diff_text(m),
            "" if a.control else p_value(m.p_value),
        ]
        for metric in metric_names(report)
        for a in report.arms
        for m in a.metrics
        if m.metric == metric
    ]
    headers = ["metric", "arm", "n", "subjects", "mean [95% CI]", "vs control [95% CI]", "p"]
    return Table(headers, rows, "feedback: mean with cluster-bootstrap interval; difference from the control")


def metric_names(report: ExperimentReport) -> list[str]:
    return sorted({m.metric for a in report.arms for m in a.metrics})


def terminal_report(report: ExperimentReport) -> str:
    head = f"experiment {report.name} ({report.state})"
    if report.description:
        head += f": {report.description}"
    lines = [head, ""]
    for table in (traffic_table(report), metrics_table(report)):
        lines += [table.caption, grid(table.headers, table.rows) if table.rows else "(no feedback yet)", ""]
    if report.excluded_requests:
        lines.append(f"{report.excluded_requests} requests served while paused or stopped are left out.")
    return "\n".join(lines).rstrip() + "\n"


def _plots(report: ExperimentReport) -> list[Image]:
    names = metric_names(report)
    if not names:
        return []
    arms = [_arm_label(a) for a in report.arms]
    panels = {
        metric: [next((m.estimate for m in a.metrics if m.metric == metric), None) for a in report.arms]
        for metric in names
    }
    images = [Image("means", plots.metric_panels(arms, panels), "feedback means per arm, 95% intervals")]
    rows = [
        (f"{a.arm}: {m.metric}", m.diff, m.diff_low, m.diff_high)
        for metric in names
        for a in report.arms
        for m in a.metrics
        if m.metric == metric and not a.control and m.estimate.n
    ]
    if rows:
        png = plots.interval_plot(rows, "difference from the control (95% interval)")
        images.append(Image("differences", png, "differences from the control with 95% intervals"))
    return images


def render_report_html(report: ExperimentReport) -> str:
    sections = [
        Section("Feedback", images=_plots(report), tables=[metrics_table(report)]),
        Section("Traffic", tables=[traffic_table(report)]),
        Section("Method", bullets=METHOD),
    ]
    sub = f"{report.state} · generated {report.generated_at} · {report.excluded_requests} requests excluded"
    if report.description:
        sub = f"{report.description} · {sub}"
    return render_page(f"Experiment {report.name}", sub, sections)
