"""Experiments at run time (:class:`ExperimentManager`): assignment for the answering core, the
request-log hook, admin verbs, feedback and reports. Transport-free; the gRPC servicer
(:mod:`hybrid_assistant.server.servicers.experiments`) converts.

**Requests.** A request that names an experiment needs a subject key and gets the arm the
experiment assigns (its adapter and retrieval settings). It may leave adapter and retrieval
unset, or repeat exactly the arm's; anything else conflicts (INVALID_ARGUMENT), since serving it
would silently leave the test. An unknown experiment is NOT_FOUND; an arm's adapter that is not
loaded is NOT_FOUND when a request uses it, like any unknown adapter.

**Feedback** for a request served by another replica (shared store) may arrive before that
replica's writer has committed the row (it logs asynchronously, in batches): the feedback then
waits for the row, re-checking with a short backoff for up to ``request_log.feedback_wait_s``
(default 3 s; the writer normally commits within milliseconds), before NOT_FOUND. Feedback is
never stored without its request, so NOT_FOUND keeps meaning an unknown id. Waiting, rather than
accepting feedback for an unknown id and joining later, keeps that answer honest.

Feedback is keyed by (request id, metric): recording the same value again is idempotent
(``duplicate``); a different value is ALREADY_EXISTS - feedback is an observation of what happened,
and letting a later call overwrite it silently would let double submissions (retries, a second
tab) bias the comparison. A client whose users may change their answer records it under another
metric (e.g. ``thumbs_final``). Feedback is committed with fsync before it is acknowledged.

**Request ids are unique.** Feedback is keyed by request id and needs no token, so an id that
could be reused would let one client replace another's log row (its subject, its arm) and the
feedback meant for it. A caller-supplied id is claimed before the request runs
(:meth:`ExperimentManager.claim_request_id`): one that is in flight, still queued for the log
writer or already stored is ALREADY_EXISTS. The in-flight set is checked and claimed before
the first ``await``, so two concurrent requests with one id cannot both pass. With the request
log off only in-flight ids are checked (nothing is stored to collide with).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING

from hybrid_assistant.server.core_types import ArmPlan, GenerateInput, GenerateOutcome, RetrievalInput
from hybrid_assistant.server.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from hybrid_assistant.server.experiments.model import (
    MAX_ECHO,
    Experiment,
    ExperimentState,
    Problem,
    from_config,
)
from hybrid_assistant.server.experiments.report import ExperimentReport, build_report
from hybrid_assistant.server.experiments.store import LogRecord
from hybrid_assistant.server.validation import MAX_REQUEST_ID_LENGTH, Problems

if TYPE_CHECKING:
    from hybrid_assistant.server.config import Settings
    from hybrid_assistant.server.experiments.log_store import LogStore
    from hybrid_assistant.server.experiments.request_log import RequestLog

log = logging.getLogger(__name__)

METRIC_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
MAX_SUBJECT_KEY = 256
_NO_RETRIEVAL = RetrievalInput()
EXPORT_PAGE = 1000
FEEDBACK_POLL_FIRST_S = 0.02
FEEDBACK_POLL_MAX_S = 0.25


class ExperimentManager:
    def __init__(self, settings: Settings, db: LogStore, request_log: RequestLog | None) -> None:
        self.settings = settings
        self.db = db
        self.request_log = request_log
        self._experiments: dict[str, Experiment] = {}
        self._admin = asyncio.Lock()
        self._claimed: set[str] = set()  # caller-supplied request ids being served
        self._refresh: asyncio.Task[None] | None = None
        self._refresh_failing = False

    def open(self) -> None:
        """Load stored experiments; create the configured ones that are not stored yet (blocking)."""
        self._experiments = self._load()
        for config in self.settings.experiments:
            if config.name in self._experiments:
                log.info("experiment %r (config) is already stored; the stored one is kept", config.name)
                continue
            experiment = from_config(config, self.settings.retrieval.max_top_k)
            try:
                self.db.save_experiment(experiment.name, experiment.to_json(), create=True)
            except AlreadyExists:  # another replica, starting at the same time, created it first
                self._experiments = self._load()
                continue
            self._experiments[experiment.name] = experiment
            log.info("created experiment %r from the config", experiment.name)

    def _load(self) -> dict[str, Experiment]:
        experiments = (Experiment.from_json(definition) for definition in self.db.experiments())
        return {experiment.name: experiment for experiment in experiments}

    # ------------------------------------------------------------------ shared definitions

    def start(self) -> None:
        """On a shared store, re-read the definitions every ``experiments_refresh_s``.

        Polling, not LISTEN/NOTIFY: a notification sent while a replica is disconnected (a
        database restart, a network blip) is lost and would need this same full re-read on
        reconnect anyway; the table holds a handful of rows, so one small query a second per
        replica is the whole cost, and every replica converges within the interval whatever
        happened in between. Assignment depends only on the stored definition (name, arms in
        order, weights, state), so replicas that read the same definition assign alike.
        """
        if self.db.shared and self._refresh is None:
            self._refresh = asyncio.create_task(self._refresh_forever())

    async def close(self) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresh
            self._refresh = None

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.request_log.experiments_refresh_s)
            try:
                await self.refresh()
            except Exception:  # a bad definition must not end the refreshes for good
                log.exception("experiments: re-reading the shared definitions failed; retrying")

    async def refresh(self) -> None:
        """Re-read every definition (under the admin lock: a local change is never undone by an
        older read). Keeps the last known definitions while the database is unreachable."""
        async with self._admin:
            try:
                loaded = await asyncio.to_thread(self._load)
            except Unavailable as exc:
                if not self._refresh_failing:
                    log.warning("experiments: cannot re-read definitions (%s); keeping the last ones", exc)
                self._refresh_failing = True
                return
            if self._refresh_failing:
                log.info("experiments: definitions re-read again")
            self._refresh_failing = False
            for name, experiment in loaded.items():
                if self._experiments.get(name) != experiment:
                    log.info("experiment %r changed on the shared store: %s", name, experiment.state.value)
            self._experiments = loaded

    # ------------------------------------------------------------------ serving hooks

    def resolve_arm(self, inp: GenerateInput) -> ArmPlan:
        if not inp.experiment:
            return ArmPlan(inp.adapter or "", inp.retrieval)
        experiment = self._experiments.get(inp.experiment)
        if experiment is None:
            raise NotFound(f"experiment {inp.experiment[:MAX_ECHO]!r} does not exist")
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

    async def claim_request_id(self, request_id: str) -> None:
        """Reserve a caller-supplied request id for one request; ALREADY_EXISTS if it is in flight,
        queued for the log or stored. Pair with :meth:`release_request_id` once the outcome is
        recorded (:meth:`on_outcome`)."""
        if request_id in self._claimed:
            raise _id_taken(request_id, "is in use by a request being served")
        self._claimed.add(request_id)  # before any await: a concurrent claim sees it
        try:
            if self.request_log is not None:
                if self.request_log.pending(request_id) is not None:
                    raise _id_taken(request_id, "was used by an earlier request")
                if await self._stored(request_id):
                    raise _id_taken(request_id, "was used by an earlier request")
        except BaseException:
            self._claimed.discard(request_id)
            raise

    async def _stored(self, request_id: str) -> bool:
        """Whether the id is in the log. With the database unreachable the request is served
        anyway (serving does not wait for the log): the writer's insert never replaces a stored
        row, so a reused id loses only its own row (counted as a duplicate), not the first one's."""
        try:
            return await asyncio.to_thread(self.db.has_request, request_id)
        except Unavailable as exc:
            log.warning("request id %r not checked against the log: %s", request_id[:MAX_ECHO], exc)
            return False

    def release_request_id(self, request_id: str) -> None:
        """End a claim (after :meth:`on_outcome` queued the row: the id stays taken through it)."""
        self._claimed.discard(request_id)

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
            raise NotFound(f"experiment {name[:MAX_ECHO]!r} does not exist")
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
        def change(stored: str) -> str:
            # Applied to the stored definition inside the store's transaction: on a shared store
            # another replica may have changed it since this one last read it (a stop is final).
            experiment = Experiment.from_json(stored)
            if weights:
                experiment = experiment.with_weights(weights)
            if state is not None:
                experiment = experiment.with_state(state)
            return experiment.to_json()

        async with self._admin:
            stored = await asyncio.to_thread(self.db.update_experiment, name, change)
            experiment = Experiment.from_json(stored)
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
        problems = Problems()
        if not request_id:
            problems.add(Problem.NO_REQUEST_ID)
        elif len(request_id) > MAX_REQUEST_ID_LENGTH or not request_id.isprintable():
            problems.add(Problem.REQUEST_ID, value=request_id, limit=MAX_REQUEST_ID_LENGTH)
        if not METRIC_PATTERN.fullmatch(metric):
            problems.add(Problem.METRIC, value=metric)
        if not math.isfinite(value):
            problems.add(Problem.FEEDBACK_VALUE, value=value)
        problems.raise_if_any()
        if self.request_log is None:
            raise FailedPrecondition("the request log is off on this server (request_log.enabled = false)")
        loop = asyncio.get_running_loop()
        wait = self.settings.request_log.feedback_wait_s if self.db.shared else 0.0
        deadline, delay = loop.time() + wait, FEEDBACK_POLL_FIRST_S
        while True:
            pending = self.request_log.pending(request_id)
            try:
                return await asyncio.to_thread(
                    self.db.record_feedback, request_id, metric, value, time.time(), pending
                )
            except NotFound as exc:
                if loop.time() >= deadline:
                    if wait:
                        raise NotFound(
                            f"{exc} (waited {wait:g} s for the replica that served it to write it)"
                        ) from None
                    raise
            # Waiting here, not in the store's thread: unknown ids cannot pin the thread pool.
            await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))
            delay = min(delay * 2, FEEDBACK_POLL_MAX_S)

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
        problems = Problems()
        for field, value in (("since_unix", since), ("until_unix", until)):
            if not (math.isfinite(value) and value >= 0):
                problems.add(Problem.TIME_BOUND, field=field, value=value)
        problems.raise_if_any()
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


def _id_taken(request_id: str, why: str) -> AlreadyExists:
    return AlreadyExists(
        f"request_id {request_id[:MAX_ECHO]!r} {why}; request ids are unique: send a new one "
        "(or none, and the server assigns one)"
    )
