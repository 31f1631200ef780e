"""Experiments at run time: assignment for the answering core, the request-log hook, admin
verbs, feedback and reports. Transport-free; the servicer converts.

**Requests.** A request that names an experiment needs a subject key and gets the arm the
experiment assigns (its adapter and retrieval settings). It may leave adapter and retrieval
unset, or repeat exactly the arm's; anything else conflicts (INVALID_ARGUMENT), since serving it
would silently leave the test. An unknown experiment is NOT_FOUND; an arm's adapter that is not
loaded is NOT_FOUND when a request uses it, like any unknown adapter.

**Feedback** is keyed by (request id, metric): recording the same value again is idempotent
(``duplicate``); a different value is ALREADY_EXISTS - feedback is an observation of what happened,
and letting a later call overwrite it silently would let double submissions (retries, a second
tab) bias the comparison. A client whose users may change their answer records it under another
metric (e.g. ``thumbs_final``). Feedback is committed with fsync before it is acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING

from server.assistant import ArmPlan, GenerateInput, GenerateOutcome, RetrievalInput
from server.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from server.experiment_report import ExperimentReport, build_report
from server.experiments import Experiment, ExperimentState, from_config
from server.log_db import LogRecord

if TYPE_CHECKING:
    from server.config import Settings
    from server.log_db import LogDatabase
    from server.request_log import RequestLog

log = logging.getLogger(__name__)

METRIC_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
MAX_SUBJECT_KEY = 256
_NO_RETRIEVAL = RetrievalInput()
EXPORT_PAGE = 1000


class ExperimentService:
    def __init__(self, settings: Settings, db: LogDatabase, request_log: RequestLog | None) -> None:
        self.settings = settings
        self.db = db
        self.request_log = request_log
        self._experiments: dict[str, Experiment] = {}
        self._admin = asyncio.Lock()

    def open(self) -> None:
        """Load stored experiments; create the configured ones that are not stored yet (blocking)."""
        for definition in self.db.experiments():
            experiment = Experiment.from_json(definition)
            self._experiments[experiment.name] = experiment
        for config in self.settings.experiments:
            if config.name in self._experiments:
                log.info("experiment %r (config) is already stored; the stored one is kept", config.name)
                continue
            experiment = from_config(config, self.settings.retrieval.max_top_k)
            self.db.save_experiment(experiment.name, experiment.to_json(), create=True)
            self._experiments[experiment.name] = experiment
            log.info("created experiment %r from the config", experiment.name)

    # ------------------------------------------------------------------ serving hooks

    def resolve_arm(self, inp: GenerateInput) -> ArmPlan:
        if not inp.experiment:
            return ArmPlan(inp.adapter or "", inp.retrieval)
        experiment = self._experiments.get(inp.experiment)
        if experiment is None:
            raise NotFound(f"experiment {inp.experiment!r} does not exist")
        if not inp.subject_key or len(inp.subject_key) > MAX_SUBJECT_KEY:
            raise InvalidArgument(
                f"subject_key is {inp.subject_key[:MAX_SUBJECT_KEY]!r}; a request in experiment "
                f"{experiment.name!r} needs a stable user or session id of 1..{MAX_SUBJECT_KEY} characters"
            )
        assignment = experiment.assign(inp.subject_key)
        arm = assignment.arm
        conflicts = []
        if inp.adapter is not None and inp.adapter != arm.adapter:
            conflicts.append(f"adapter {inp.adapter!r} (the arm uses {arm.adapter or 'the base model'!r})")
        if inp.retrieval != _NO_RETRIEVAL and inp.retrieval != arm.retrieval:
            conflicts.append("retrieval options that differ from the arm's")
        if conflicts:
            raise InvalidArgument(
                f"experiment {experiment.name!r} assigns subject {inp.subject_key!r} to arm {arm.name!r}, "
                f"but the request sets {' and '.join(conflicts)}; leave adapter and retrieval unset "
                "in experiment requests"
            )
        return ArmPlan(arm.adapter, arm.retrieval, experiment.name, arm.name, in_test=assignment.in_test)

    def on_outcome(
        self, inp: GenerateInput, plan: ArmPlan, outcome: GenerateOutcome | None, status: str
    ) -> None:
        """Hand the served request to the log writer (never blocks)."""
        if self.request_log is None:
            return
        self.request_log.record(
            LogRecord(
                request_id=outcome.request_id if outcome else inp.request_id or uuid.uuid4().hex,
                time_unix=time.time(),
                experiment=plan.experiment,
                arm=plan.arm,
                in_test=plan.in_test,
                subject_key=inp.subject_key,
                adapter=plan.adapter,
                retrieval=plan.retrieval.enabled,
                document_ids=tuple(dict.fromkeys(p.document_id for p in outcome.contexts)) if outcome else (),
                prompt_tokens=outcome.prompt_tokens if outcome else 0,
                completion_tokens=outcome.completion_tokens if outcome else 0,
                ttft_ms=outcome.ttft_ms if outcome else 0.0,
                total_ms=outcome.total_ms if outcome else 0.0,
                status=status,
            )
        )

    # ------------------------------------------------------------------ admin

    def get(self, name: str) -> Experiment:
        experiment = self._experiments.get(name)
        if experiment is None:
            raise NotFound(f"experiment {name!r} does not exist")
        return experiment

    def list(self) -> list[Experiment]:
        return sorted(self._experiments.values(), key=lambda e: e.name)

    async def create(self, experiment: Experiment) -> Experiment:
        async with self._admin:
            if experiment.name in self._experiments:
                raise AlreadyExists(f"experiment {experiment.name!r} already exists")
            await asyncio.to_thread(
                self.db.save_experiment, experiment.name, experiment.to_json(), create=True
            )
            self._experiments[experiment.name] = experiment
        log.info("experiment %r created with arms %s", experiment.name, [a.name for a in experiment.arms])
        return experiment

    async def update(
        self, name: str, state: ExperimentState | None, weights: Mapping[str, float]
    ) -> Experiment:
        async with self._admin:
            experiment = self.get(name)
            if weights:
                experiment = experiment.with_weights(weights)
            if state is not None:
                experiment = experiment.with_state(state)
            await asyncio.to_thread(self.db.save_experiment, name, experiment.to_json(), create=False)
            self._experiments[name] = experiment
        log.info(
            "experiment %r: %s, weights %s",
            name,
            experiment.state.value,
            {a.name: a.weight for a in experiment.arms},
        )
        return experiment

    # ------------------------------------------------------------------ feedback and reports

    async def record_feedback(self, request_id: str, metric: str, value: float) -> bool:
        """True when the same value was already recorded (nothing changed)."""
        problems = []
        if not request_id:
            problems.append("request_id is empty")
        if not METRIC_PATTERN.fullmatch(metric):
            problems.append(f"metric is {metric!r}; expected 1-64 letters, digits, '_', '.', ':', '-'")
        if not math.isfinite(value):
            problems.append(f"value is {value}; expected a finite number")
        if problems:
            raise InvalidArgument("; ".join(problems))
        if self.request_log is None:
            raise FailedPrecondition("the request log is off on this server (request_log.enabled = false)")
        pending = self.request_log.pending(request_id)
        return await asyncio.to_thread(
            self.db.record_feedback, request_id, metric, value, time.time(), pending
        )

    async def flush(self) -> None:
        """Let everything served so far reach the log (so a report includes it)."""
        if self.request_log is not None:
            await asyncio.to_thread(self.request_log.flush)

    async def report(self, name: str) -> ExperimentReport:
        experiment = self.get(name)
        await self.flush()

        def build() -> ExperimentReport:
            requests, excluded = self.db.experiment_requests(name)
            return build_report(experiment, requests, self.db.experiment_feedback(name), excluded)

        return await asyncio.to_thread(build)

    async def export(
        self, experiment: str, since: float, until: float
    ) -> AsyncIterator[tuple[LogRecord, dict[str, float]]]:
        if experiment:
            self.get(experiment)
        await self.flush()
        after = (-math.inf, "")
        while True:
            page = await asyncio.to_thread(self.db.export_page, experiment, since, until, after, EXPORT_PAGE)
            for item in page:
                yield item
            if len(page) < EXPORT_PAGE:
                return
            last = page[-1][0]
            after = (last.time_unix, last.request_id)
