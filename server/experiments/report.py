"""An experiment's report from its logged requests and feedback, with the eval's statistics.

Only requests served while the experiment was RUNNING count (paused/stopped traffic is excluded).
Per arm: requests (errors included), distinct subjects, latency p50/p99 and mean completion tokens
over successful requests. Per feedback metric and arm: the mean with a 95% cluster-bootstrap
interval, clustered by subject (one subject's feedback is not independent), from
:class:`eval.stats.ClusterBootstrap`. Each arm against the control: the difference of means; its
interval from independent bootstrap resamples of the two arms (arms hold different subjects, so
nothing is paired); and a two-sided permutation p-value that deals whole subjects between the two
arms (:func:`eval.stats.cluster_permutation_test`). A subject moved between arms by a weight
change counts as a separate cluster in each arm.

Past :data:`BOOTSTRAP_MAX_SUBJECTS` subjects in an arm, resampling would cost memory in proportion
to resamples x subjects inside the server, and the central limit theorem has long taken over: the
intervals become mean +- 1.96 cluster-robust standard errors (:func:`eval.stats.cluster_se`) and
the p-value a two-sided z-test on the difference.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import TYPE_CHECKING

import numpy as np

from hybrid_assistant.eval.stats import (
    DEFAULT_RESAMPLES,
    ClusterBootstrap,
    Estimate,
    cluster_permutation_test,
    cluster_se,
)

if TYPE_CHECKING:
    from hybrid_assistant.server.experiments.model import Experiment
    from hybrid_assistant.server.experiments.store import LogRecord

NAN = float("nan")
N_PERMUTATIONS = 5000
BOOTSTRAP_MAX_SUBJECTS = 5000
_Z = NormalDist().inv_cdf(0.975)


@dataclass(frozen=True)
class MetricResult:
    metric: str
    estimate: Estimate  # mean, 95% interval, n values, subjects
    diff: float = NAN  # minus the control's mean (NaN for the control itself)
    diff_low: float = NAN
    diff_high: float = NAN
    p_value: float = NAN


@dataclass(frozen=True)
class ArmResult:
    arm: str
    control: bool
    weight: float
    requests: int
    errors: int
    subjects: int
    latency_p50_ms: float
    latency_p99_ms: float
    mean_completion_tokens: float
    metrics: list[MetricResult] = field(default_factory=list)


@dataclass(frozen=True)
class ExperimentReport:
    name: str
    state: str
    description: str
    generated_at: str
    arms: list[ArmResult]
    excluded_requests: int


@dataclass
class _Sample:
    """One arm's feedback on one metric: values and the subject of each."""

    values: list[float] = field(default_factory=list)
    subjects: list[str] = field(default_factory=list)


def build_report(
    experiment: Experiment,
    requests: Sequence[LogRecord],
    feedback: Sequence[tuple[str, str, float]],
    excluded_requests: int = 0,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    n_permutations: int = N_PERMUTATIONS,
    seed: int = 0,
) -> ExperimentReport:
    by_arm: dict[str, list[LogRecord]] = defaultdict(list)
    by_id: dict[str, LogRecord] = {}
    for record in requests:
        by_arm[record.arm].append(record)
        by_id[record.request_id] = record
    samples: dict[str, dict[str, _Sample]] = defaultdict(lambda: defaultdict(_Sample))
    for request_id, metric, value in feedback:
        rated = by_id.get(request_id)
        if rated is not None:
            sample = samples[metric][rated.arm]
            sample.values.append(value)
            sample.subjects.append(rated.subject_key)
    control = experiment.control.name
    metrics = {
        metric: _compare_metric(metric, per_arm, control, n_resamples, n_permutations, seed)
        for metric, per_arm in sorted(samples.items())
    }
    arms = [
        _arm_result(arm.name, arm.control, arm.weight, by_arm.get(arm.name, []), metrics)
        for arm in experiment.arms
    ]
    return ExperimentReport(
        name=experiment.name,
        state=experiment.state.value,
        description=experiment.description,
        generated_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        arms=arms,
        excluded_requests=excluded_requests,
    )


def _arm_result(
    name: str,
    control: bool,
    weight: float,
    records: list[LogRecord],
    metrics: dict[str, dict[str, MetricResult]],
) -> ArmResult:
    ok = [r for r in records if r.status == "ok"]
    latency = np.array([r.total_ms for r in ok], dtype=np.float64)
    p50, p99 = (float(v) for v in np.percentile(latency, [50, 99])) if ok else (NAN, NAN)
    return ArmResult(
        arm=name,
        control=control,
        weight=weight,
        requests=len(records),
        errors=len(records) - len(ok),
        subjects=len({r.subject_key for r in records}),
        latency_p50_ms=p50,
        latency_p99_ms=p99,
        mean_completion_tokens=float(np.mean([r.completion_tokens for r in ok])) if ok else NAN,
        metrics=[per_arm[name] for per_arm in metrics.values() if name in per_arm],
    )


def _compare_metric(
    metric: str,
    per_arm: dict[str, _Sample],
    control: str,
    n_resamples: int,
    n_permutations: int,
    seed: int,
) -> dict[str, MetricResult]:
    """Each arm's mean and interval; each non-control arm's difference from the control."""
    if any(len(set(sample.subjects)) > BOOTSTRAP_MAX_SUBJECTS for sample in per_arm.values()):
        return _compare_normal(metric, per_arm, control)
    boots: dict[str, tuple[Estimate, np.ndarray]] = {}
    for index, (arm, sample) in enumerate(sorted(per_arm.items())):
        bootstrap = ClusterBootstrap(sample.subjects, n_resamples, seed=seed + index)
        values = np.asarray(sample.values, dtype=np.float64)
        boots[arm] = (bootstrap.mean_ci(values), bootstrap.resampled_means(values))
    results: dict[str, MetricResult] = {}
    reference = boots.get(control)
    for arm, (estimate, resampled) in boots.items():
        if arm == control or reference is None:
            results[arm] = MetricResult(metric, estimate)
            continue
        diffs = resampled - reference[1]
        diffs = diffs[~np.isnan(diffs)]
        low, high = (float(v) for v in np.percentile(diffs, [2.5, 97.5])) if diffs.size else (NAN, NAN)
        p = cluster_permutation_test(
            np.asarray(per_arm[arm].values),
            per_arm[arm].subjects,
            np.asarray(per_arm[control].values),
            per_arm[control].subjects,
            n_permutations=n_permutations,
            seed=seed,
        )
        results[arm] = MetricResult(metric, estimate, estimate.mean - reference[0].mean, low, high, p)
    return results


def significant(result: MetricResult) -> bool:
    """The difference's interval excludes zero."""
    return math.isfinite(result.diff_low) and (result.diff_low > 0 or result.diff_high < 0)


def _normal_estimate(sample: _Sample) -> tuple[Estimate, float]:
    values = np.asarray(sample.values, dtype=np.float64)
    labels, index = np.unique(np.asarray(sample.subjects), return_inverse=True)
    mean, se = float(values.mean()), cluster_se(values, index)
    return Estimate(mean, mean - _Z * se, mean + _Z * se, len(values), len(labels)), se


def _compare_normal(metric: str, per_arm: dict[str, _Sample], control: str) -> dict[str, MetricResult]:
    """Large arms: cluster-robust normal intervals and a z-test (see the module docstring)."""
    estimates = {arm: _normal_estimate(sample) for arm, sample in per_arm.items()}
    reference = estimates.get(control)
    results: dict[str, MetricResult] = {}
    for arm, (estimate, se) in estimates.items():
        if arm == control or reference is None:
            results[arm] = MetricResult(metric, estimate)
            continue
        diff = estimate.mean - reference[0].mean
        se_diff = math.hypot(se, reference[1])
        p = 2 * (1 - NormalDist().cdf(abs(diff) / se_diff)) if se_diff > 0 else NAN
        results[arm] = MetricResult(metric, estimate, diff, diff - _Z * se_diff, diff + _Z * se_diff, p)
    return results
