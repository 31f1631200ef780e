"""Experiments: definitions, validation, the state machine, and assignment by a stable hash.

**Assignment.** A subject's point is ``sha256(name NUL subject_key)`` read as a number in
[0, 1). The arms cover [0, 1) with consecutive ranges in their definition order, each as wide as
its share of the total weight; the subject gets the arm whose range holds its point. So:

- the same subject always gets the same arm while the weights are unchanged (no state kept);
- over many subjects each arm's share converges to its weight (sha256 is uniform);
- the hash is salted by the experiment's name, so experiments assign independently, and changing
  one experiment's weights cannot move anyone in another.

**Weight changes** move the range boundaries; only subjects whose point now falls in another
arm's range move. With two arms that is the minimum possible (going from 50/50 to 70/30 moves
exactly 20% of subjects, all from the shrinking arm to the growing one). With more arms, a
boundary between two arms shifts by the change of the total weight before it, so up to
``sum |change of each boundary|`` of subjects move: to move fewer, change the weights of
neighbouring arms. Arms keep their order for the experiment's life. Requests are logged with
the arm they were served, so the report counts a moved subject in each arm it was served by.

**Weights** are finite numbers in [0, MAX_WEIGHT]: only their ratios matter, and the bound
keeps their sum finite (weights of 1e308 add up to inf, and every subject then lands in one arm).

**States.** RUNNING assigns by the hash. PAUSED and STOPPED serve every subject the control arm
and log those requests as not part of the test (the report leaves them out and counts them as
excluded). PAUSED can resume; STOPPED is final (resuming or re-weighting it is
FAILED_PRECONDITION). Weights may be changed while RUNNING or PAUSED.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from hybrid_assistant.server.core_types import RetrievalInput
from hybrid_assistant.server.errors import FailedPrecondition
from hybrid_assistant.server.validation import (
    MAX_ECHO_CHARS,
    MAX_METADATA_FILTER_KEYS,
    MAX_METADATA_KEY_CHARS,
    MAX_METADATA_VALUE_CHARS,
    Problems,
)

if TYPE_CHECKING:
    from hybrid_assistant.server.experiments.settings import ExperimentConfig

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
ARM_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:+-]{0,63}")
MAX_ARMS = 16
MAX_DESCRIPTION = 1000
MAX_WEIGHT = 1e6  # only ratios matter; the bound keeps the sum of the weights finite
MAX_ADAPTER_NAME = 64  # as adapters.paths allows
# An arm's metadata filter: the same bounds as a request's.
MAX_FILTER_KEYS = MAX_METADATA_FILTER_KEYS
MAX_FILTER_KEY_LENGTH = MAX_METADATA_KEY_CHARS
MAX_FILTER_VALUE_LENGTH = MAX_METADATA_VALUE_CHARS
MAX_ECHO = MAX_ECHO_CHARS  # characters of a bad value quoted back
_SEARCH_MODES = ("", "dense", "lexical", "hybrid")


class ExperimentState(enum.Enum):
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"


class Problem(enum.Enum):
    """Every validation message of the experiments domain, showing the bad value (collected by
    :class:`~hybrid_assistant.server.validation.Problems`)."""

    NAME = "experiment name is {value!r}; expected 1-64 letters, digits, '_', '.', '-' (not first)"
    DESCRIPTION = "description is {value} characters; at most {limit}"
    ARM_COUNT = "an experiment needs 2..{limit} arms, got {value}"
    ARM_NAME = "arms[{index}].name is {value!r}; expected 1-64 letters, digits, '_', '.', ':', '+', '-'"
    DUPLICATE_ARM = "arms[{index}].name {value!r} is used by an earlier arm"
    CONTROL_COUNT = "exactly one arm must be the control; {value} are"
    WEIGHT = "weight of arm {arm!r} is {value}; expected a finite number from 0 to {limit}"
    WEIGHT_SUM = "the weights add up to {value}; at least one must be positive"
    UNKNOWN_ARM = "weights name arm {value!r}, which experiment {name!r} does not have (arms: {arms})"
    TOP_K = "arms[{index}].retrieval.top_k is {value}; expected 0..{limit} (0 = server default)"
    MODE = "arms[{index}].retrieval.mode is {value!r}; expected one of " + ", ".join(map(repr, _SEARCH_MODES))
    MIN_SCORE = "arms[{index}].retrieval.min_score is {value}; expected a finite number"
    PASSAGES = "arms[{index}].retrieval.passages must be empty: arms retrieve from the index"
    ADAPTER = (
        "arms[{index}].adapter is {value!r}; expected an adapter name of at most {limit} characters "
        "or '' (base model)"
    )
    FILTER_KEYS = "arms[{index}].retrieval.metadata_filter has {value} keys; at most {limit}"
    FILTER_KEY = "arms[{index}].retrieval.metadata_filter key {value!r}: expected 1..{limit} characters"
    FILTER_VALUE = (
        "arms[{index}].retrieval.metadata_filter[{key!r}] is {value!r}; expected at most {limit} characters"
    )
    # RecordFeedback and ExportRequestLog (checked by the service)
    NO_REQUEST_ID = "request_id is empty"
    REQUEST_ID = "request_id is {value!r}; expected at most {limit} printable characters"
    METRIC = "metric is {value!r}; expected 1-64 letters, digits, '_', '.', ':', '-'"
    FEEDBACK_VALUE = "value is {value}; expected a finite number"
    TIME_BOUND = "{field} is {value}; expected a finite time >= 0 (0 = no bound)"

    def format(self, **values: object) -> str:
        # Quoted values are cut short: a status message over 16 KB reaches the client as
        # RESOURCE_EXHAUSTED instead of the error.
        return self.value.format(**{k: _short(v) if k in _CUT else v for k, v in values.items()})


_CUT = ("value", "key", "arm")  # the keys that quote a caller's value


def _short(value: object) -> object:
    return value[:MAX_ECHO] if isinstance(value, str) else value


@dataclass(frozen=True)
class Arm:
    name: str
    adapter: str = ""  # "" = the base model
    retrieval: RetrievalInput = field(default_factory=RetrievalInput)
    weight: float = 1.0
    control: bool = False


@dataclass(frozen=True)
class Assignment:
    arm: Arm
    in_test: bool  # False while paused or stopped: the control arm, left out of the report


def subject_point(experiment: str, subject_key: str) -> float:
    """The subject's stable point in [0, 1) for this experiment (64 bits of sha256)."""
    digest = hashlib.sha256(f"{experiment}\0{subject_key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


@dataclass(frozen=True)
class Experiment:
    name: str
    arms: tuple[Arm, ...]
    state: ExperimentState = ExperimentState.RUNNING
    description: str = ""
    created_unix: float = 0.0

    @property
    def control(self) -> Arm:
        return next(arm for arm in self.arms if arm.control)

    def arm(self, name: str) -> Arm | None:
        return next((arm for arm in self.arms if arm.name == name), None)

    def pick(self, point: float) -> Arm:
        """The arm whose cumulative-weight range holds ``point`` (arms with weight 0 get nobody)."""
        total = sum(arm.weight for arm in self.arms)
        edge = 0.0
        for arm in self.arms:
            edge += arm.weight / total
            if arm.weight > 0 and point < edge:
                return arm
        return next(arm for arm in reversed(self.arms) if arm.weight > 0)  # rounding at the top

    def assign(self, subject_key: str) -> Assignment:
        if self.state is not ExperimentState.RUNNING:
            return Assignment(self.control, in_test=False)
        return Assignment(self.pick(subject_point(self.name, subject_key)), in_test=True)

    def with_state(self, state: ExperimentState) -> Experiment:
        if self.state is ExperimentState.STOPPED and state is not ExperimentState.STOPPED:
            raise FailedPrecondition(
                f"experiment {self.name!r} is stopped and cannot be set to {state.value}; "
                "create a new experiment instead"
            )
        return replace(self, state=state)

    def with_weights(self, weights: Mapping[str, float]) -> Experiment:
        """Change some arms' weights (arms not named keep theirs)."""
        if self.state is ExperimentState.STOPPED:
            raise FailedPrecondition(f"experiment {self.name!r} is stopped; its weights cannot change")
        problems = Problems()
        names = [arm.name for arm in self.arms]
        for name in weights:
            if name not in names:
                problems.add(Problem.UNKNOWN_ARM, value=name, name=self.name, arms=", ".join(names))
        problems.raise_if_any()
        arms = tuple(replace(arm, weight=float(weights.get(arm.name, arm.weight))) for arm in self.arms)
        updated = replace(self, arms=arms)
        _check_weights(updated.arms, problems)
        problems.raise_if_any()
        return updated

    # ------------------------------------------------------------------ storage

    def to_json(self) -> str:
        return json.dumps(
            {
                "name": self.name,
                "description": self.description,
                "state": self.state.value,
                "created_unix": self.created_unix,
                "arms": [
                    {
                        "name": a.name,
                        "adapter": a.adapter,
                        "weight": a.weight,
                        "control": a.control,
                        "retrieval": {
                            "enabled": a.retrieval.enabled,
                            "top_k": a.retrieval.top_k,
                            "mode": a.retrieval.mode,
                            "min_score": a.retrieval.min_score,
                            "metadata_filter": dict(a.retrieval.metadata_filter),
                        },
                    }
                    for a in self.arms
                ],
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> Experiment:
        data: dict[str, Any] = json.loads(text)
        arms = tuple(
            Arm(
                name=a["name"],
                adapter=a["adapter"],
                retrieval=RetrievalInput(**a["retrieval"]),
                weight=a["weight"],
                control=a["control"],
            )
            for a in data["arms"]
        )
        return cls(
            name=data["name"],
            arms=arms,
            state=ExperimentState(data["state"]),
            description=data["description"],
            created_unix=data["created_unix"],
        )


def new_experiment(
    name: str, arms: tuple[Arm, ...], *, description: str = "", max_top_k: int, now: float | None = None
) -> Experiment:
    """A validated, RUNNING experiment; every problem is reported at once (INVALID_ARGUMENT)."""
    problems = Problems()
    if not NAME_PATTERN.fullmatch(name):
        problems.add(Problem.NAME, value=name)
    if len(description) > MAX_DESCRIPTION:
        problems.add(Problem.DESCRIPTION, value=len(description), limit=MAX_DESCRIPTION)
    if not 2 <= len(arms) <= MAX_ARMS:
        problems.add(Problem.ARM_COUNT, value=len(arms), limit=MAX_ARMS)
        if len(arms) > MAX_ARMS:  # the arms themselves are not worth checking one by one
            problems.raise_if_any()
    seen: set[str] = set()
    for index, arm in enumerate(arms):
        if not ARM_PATTERN.fullmatch(arm.name):
            problems.add(Problem.ARM_NAME, index=index, value=arm.name)
        elif arm.name in seen:
            problems.add(Problem.DUPLICATE_ARM, index=index, value=arm.name)
        seen.add(arm.name)
        if arm.adapter and (
            arm.adapter != arm.adapter.strip() or "/" in arm.adapter or len(arm.adapter) > MAX_ADAPTER_NAME
        ):
            problems.add(Problem.ADAPTER, index=index, value=arm.adapter, limit=MAX_ADAPTER_NAME)
        _check_retrieval(index, arm.retrieval, max_top_k, problems)
    controls = sum(arm.control for arm in arms)
    if controls != 1:
        problems.add(Problem.CONTROL_COUNT, value=controls)
    _check_weights(arms, problems)
    problems.raise_if_any()
    created = time.time() if now is None else now
    return Experiment(name, arms, ExperimentState.RUNNING, description, created)


def from_config(config: ExperimentConfig, max_top_k: int) -> Experiment:
    """A validated experiment from its ``[[experiments]]`` config entry."""
    arms = tuple(
        Arm(
            name=a.name,
            adapter=a.adapter,
            retrieval=RetrievalInput(
                enabled=a.retrieval,
                top_k=a.top_k,
                mode=a.mode,
                min_score=a.min_score,
                metadata_filter=dict(a.metadata_filter),
            ),
            weight=a.weight,
            control=a.control,
        )
        for a in config.arms
    )
    return new_experiment(config.name, arms, description=config.description, max_top_k=max_top_k)


def _check_retrieval(index: int, retrieval: RetrievalInput, max_top_k: int, problems: Problems) -> None:
    if not 0 <= retrieval.top_k <= max_top_k:
        problems.add(Problem.TOP_K, index=index, value=retrieval.top_k, limit=max_top_k)
    if retrieval.mode not in _SEARCH_MODES:
        problems.add(Problem.MODE, index=index, value=retrieval.mode)
    if not math.isfinite(retrieval.min_score):
        problems.add(Problem.MIN_SCORE, index=index, value=retrieval.min_score)
    if retrieval.passages:
        problems.add(Problem.PASSAGES, index=index)
    metadata_filter = retrieval.metadata_filter
    if len(metadata_filter) > MAX_FILTER_KEYS:
        problems.add(Problem.FILTER_KEYS, index=index, value=len(metadata_filter), limit=MAX_FILTER_KEYS)
        return
    for key, value in metadata_filter.items():
        if not 1 <= len(key) <= MAX_FILTER_KEY_LENGTH:
            problems.add(Problem.FILTER_KEY, index=index, value=key, limit=MAX_FILTER_KEY_LENGTH)
        if len(value) > MAX_FILTER_VALUE_LENGTH:
            problems.add(
                Problem.FILTER_VALUE, index=index, key=key, value=value, limit=MAX_FILTER_VALUE_LENGTH
            )


def _check_weights(arms: tuple[Arm, ...], problems: Problems) -> None:
    finite = True
    for arm in arms:
        if not (math.isfinite(arm.weight) and 0 <= arm.weight <= MAX_WEIGHT):
            problems.add(Problem.WEIGHT, arm=arm.name, value=arm.weight, limit=int(MAX_WEIGHT))
            finite = False
    total = sum(arm.weight for arm in arms)
    if finite and arms and total <= 0:
        problems.add(Problem.WEIGHT_SUM, value=total)
