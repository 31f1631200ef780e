"""Experiments, reports and log records: protobuf and config <-> domain, at the edge."""

from __future__ import annotations

import math

from hybrid_assistant.eval.stats import Estimate
from hybrid_assistant.server import convert
from hybrid_assistant.server.experiments.model import Arm, Experiment, ExperimentState, new_experiment
from hybrid_assistant.server.experiments.report import ArmResult, ExperimentReport, MetricResult
from hybrid_assistant.server.experiments.store import LogRecord
from hybrid_assistant.v1 import assistant_pb2 as pb

STATE_TO_PB = {
    ExperimentState.RUNNING: pb.EXPERIMENT_STATE_RUNNING,
    ExperimentState.PAUSED: pb.EXPERIMENT_STATE_PAUSED,
    ExperimentState.STOPPED: pb.EXPERIMENT_STATE_STOPPED,
}
STATE_FROM_PB = {value: state for state, value in STATE_TO_PB.items()}
STATE_BY_NAME = {state.value: state for state in ExperimentState}


def experiment_from_pb(message: pb.Experiment, max_top_k: int) -> Experiment:
    arms = tuple(
        Arm(
            name=a.name,
            adapter=a.adapter if a.HasField("adapter") else "",
            retrieval=convert.retrieval(a.retrieval),
            weight=a.weight,
            control=a.control,
        )
        for a in message.arms
    )
    return new_experiment(message.name, arms, description=message.description, max_top_k=max_top_k)


def experiment_to_pb(experiment: Experiment) -> pb.Experiment:
    arms = []
    for arm in experiment.arms:
        message = pb.ExperimentArm(
            name=arm.name,
            retrieval=convert.retrieval_to_pb(arm.retrieval),
            weight=arm.weight,
            control=arm.control,
        )
        if arm.adapter:
            message.adapter = arm.adapter
        arms.append(message)
    return pb.Experiment(
        name=experiment.name,
        arms=arms,
        state=STATE_TO_PB[experiment.state],
        created_unix=experiment.created_unix,
        description=experiment.description,
    )


def report_to_pb(report: ExperimentReport) -> pb.ExperimentReport:
    return pb.ExperimentReport(
        name=report.name,
        generated_at=report.generated_at,
        state=STATE_TO_PB[STATE_BY_NAME[report.state]],
        description=report.description,
        excluded_requests=report.excluded_requests,
        arms=[
            pb.ArmReport(
                arm=a.arm,
                control=a.control,
                weight=a.weight,
                requests=a.requests,
                errors=a.errors,
                subjects=a.subjects,
                latency_p50_ms=a.latency_p50_ms,
                latency_p99_ms=a.latency_p99_ms,
                mean_completion_tokens=a.mean_completion_tokens,
                metrics=[
                    pb.MetricComparison(
                        metric=m.metric,
                        n=m.estimate.n,
                        subjects=m.estimate.n_groups,
                        mean=m.estimate.mean,
                        ci_low=m.estimate.ci_low,
                        ci_high=m.estimate.ci_high,
                        diff_vs_control=m.diff,
                        diff_ci_low=m.diff_low,
                        diff_ci_high=m.diff_high,
                        p_value=m.p_value,
                    )
                    for m in a.metrics
                ],
            )
            for a in report.arms
        ],
    )


def report_from_pb(message: pb.ExperimentReport) -> ExperimentReport:
    """The client side's view of a report (for the terminal table and the HTML page)."""
    state = STATE_FROM_PB.get(message.state)
    return ExperimentReport(
        name=message.name,
        state=state.value if state else "",
        description=message.description,
        generated_at=message.generated_at,
        excluded_requests=message.excluded_requests,
        arms=[
            ArmResult(
                arm=a.arm,
                control=a.control,
                weight=a.weight,
                requests=a.requests,
                errors=a.errors,
                subjects=a.subjects,
                latency_p50_ms=a.latency_p50_ms,
                latency_p99_ms=a.latency_p99_ms,
                mean_completion_tokens=a.mean_completion_tokens,
                metrics=[
                    MetricResult(
                        m.metric,
                        Estimate(m.mean, m.ci_low, m.ci_high, m.n, m.subjects),
                        m.diff_vs_control,
                        m.diff_ci_low,
                        m.diff_ci_high,
                        m.p_value,
                    )
                    for m in a.metrics
                ],
            )
            for a in message.arms
        ],
    )


def record_to_pb(record: LogRecord, feedback: dict[str, float]) -> pb.RequestLogRecord:
    return pb.RequestLogRecord(
        request_id=record.request_id,
        time_unix=record.time_unix,
        experiment=record.experiment,
        arm=record.arm,
        in_test=record.in_test,
        subject_key=record.subject_key,
        adapter=record.adapter,
        retrieval=record.retrieval,
        document_ids=list(record.document_ids),
        prompt_tokens=record.prompt_tokens,
        completion_tokens=record.completion_tokens,
        ttft_ms=record.ttft_ms,
        total_ms=record.total_ms,
        status=record.status,
        feedback={k: v for k, v in feedback.items() if math.isfinite(v)},
    )
