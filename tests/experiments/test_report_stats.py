"""Report statistics on synthetic experiments whose true effect is known."""

from __future__ import annotations

import numpy as np
import pytest

from hybrid_assistant.eval.stats import cluster_permutation_test
from hybrid_assistant.server.experiments import report as experiment_report
from hybrid_assistant.server.experiments.model import Arm, new_experiment
from hybrid_assistant.server.experiments.report import (
    ExperimentReport,
    MetricResult,
    build_report,
    significant,
)
from hybrid_assistant.server.experiments.store import LogRecord

EXPERIMENT = new_experiment(
    "synthetic", (Arm("control", control=True), Arm("treated", adapter="style")), max_top_k=50
)


def synthetic(
    effect: float, *, subjects: int = 300, seed: int = 0, subject_sd: float = 0.5
) -> tuple[list[LogRecord], list[tuple[str, str, float]]]:
    """Ratings = 3 + subject effect + noise (+ ``effect`` in the treated arm); 1-6 requests each."""
    rng = np.random.default_rng(seed)
    records, feedback = [], []
    for arm in ("control", "treated"):
        for s in range(subjects):
            subject = f"{arm}-{s}"
            level = 3 + rng.normal(0, subject_sd) + (effect if arm == "treated" else 0.0)
            for r in range(int(rng.integers(1, 7))):
                request_id = f"{subject}-{r}"
                latency = float(rng.gamma(4, 50)) * (2 if arm == "treated" else 1)
                records.append(
                    LogRecord(
                        request_id,
                        0.0,
                        "synthetic",
                        arm,
                        True,
                        subject,
                        "",
                        False,
                        (),
                        10,
                        20,
                        5.0,
                        latency,
                        "ok",
                    )
                )
                feedback.append((request_id, "rating", float(level + rng.normal(0, 1))))
                feedback.append((request_id, "thumbs", float(rng.random() < 0.5)))
    return records, feedback


def metric(report: ExperimentReport, arm: str, name: str) -> MetricResult:
    arms = {a.arm: a for a in report.arms}
    return next(m for m in arms[arm].metrics if m.metric == name)


def test_known_difference_is_inside_the_interval_and_significant() -> None:
    records, feedback = synthetic(effect=0.3)
    report = build_report(EXPERIMENT, records, feedback, excluded_requests=7, n_resamples=1000)
    rating = metric(report, "treated", "rating")
    assert rating.diff_low < 0.3 < rating.diff_high
    assert abs(rating.diff - 0.3) < 0.15
    assert rating.p_value < 0.01 and significant(rating)
    control = metric(report, "control", "rating")
    assert control.estimate.ci_low < 3.0 < control.estimate.ci_high
    assert control.estimate.n_groups == 300
    # Thumbs have no true difference.
    thumbs = metric(report, "treated", "thumbs")
    assert thumbs.diff_low < 0 < thumbs.diff_high and thumbs.p_value > 0.05
    treated = next(a for a in report.arms if a.arm == "treated")
    assert treated.subjects == 300
    assert treated.requests == sum(r.arm == "treated" for r in records) and treated.errors == 0
    assert treated.latency_p50_ms > 1.5 * next(a for a in report.arms if a.control).latency_p50_ms
    assert report.excluded_requests == 7


def test_no_difference_gives_a_large_p_value_and_an_interval_around_zero() -> None:
    records, feedback = synthetic(effect=0.0, seed=3)
    report = build_report(EXPERIMENT, records, feedback, n_resamples=1000)
    rating = metric(report, "treated", "rating")
    assert rating.diff_low < 0 < rating.diff_high
    assert rating.p_value > 0.1
    assert not significant(rating)


def test_permutation_test_is_calibrated_under_the_null() -> None:
    """About 5% of null experiments reject at 5% (clustered data, unequal cluster sizes)."""
    rng = np.random.default_rng(11)
    rejections = 0
    trials = 200
    for trial in range(trials):
        values, groups = [], []
        for arm in range(2):
            size = rng.integers(1, 8, size=40)
            for g, n in enumerate(size):
                level = rng.normal(0, 1)
                values.append(level + rng.normal(0, 1, size=n))
                groups += [f"{arm}-{g}"] * int(n)
        a_len = sum(len(v) for v in values[:40])
        flat = np.concatenate(values)
        p = cluster_permutation_test(flat[:a_len], groups[:a_len], flat[a_len:], groups[a_len:], 500, trial)
        rejections += p < 0.05
    assert 0.015 <= rejections / trials <= 0.10


def test_empty_and_control_only_metrics() -> None:
    records, feedback = synthetic(effect=0.0, subjects=5)
    only_control = [f for f in feedback if f[0].startswith("control")]
    report = build_report(EXPERIMENT, records, only_control, n_resamples=100)
    control = next(a for a in report.arms if a.control)
    treated = next(a for a in report.arms if not a.control)
    assert {m.metric for m in control.metrics} == {"rating", "thumbs"}
    assert treated.metrics == []
    empty = build_report(EXPERIMENT, [], [], n_resamples=100)
    assert [a.requests for a in empty.arms] == [0, 0]
    assert all(np.isnan(a.latency_p50_ms) for a in empty.arms)


def test_large_arms_switch_to_normal_intervals_that_agree_with_the_bootstrap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    records, feedback = synthetic(effect=0.3, seed=5)
    boot = metric(build_report(EXPERIMENT, records, feedback, n_resamples=2000), "treated", "rating")
    monkeypatch.setattr(experiment_report, "BOOTSTRAP_MAX_SUBJECTS", 10)
    normal = metric(build_report(EXPERIMENT, records, feedback), "treated", "rating")
    assert normal.diff == pytest.approx(boot.diff)
    assert normal.diff_low == pytest.approx(boot.diff_low, abs=0.03)
    assert normal.diff_high == pytest.approx(boot.diff_high, abs=0.03)
    assert normal.estimate.ci_low == pytest.approx(boot.estimate.ci_low, abs=0.03)
    assert normal.p_value < 0.01 and normal.estimate.n_groups == 300
