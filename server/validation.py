"""Request validation: every message in one enum, all problems collected and raised once."""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from server.errors import InvalidArgument

ROLES = ("system", "user", "assistant")
MAX_STOP_STRINGS = 8
MAX_STOP_LENGTH = 128
MAX_REQUEST_ID_LENGTH = 128


class Problem(enum.Enum):
    NO_MESSAGES = "messages is empty: send at least one user message"
    BAD_ROLE = "messages[{index}].role is {value!r}; expected one of " + ", ".join(ROLES)
    EMPTY_CONTENT = "messages[{index}].content is empty"
    NO_USER_MESSAGE = "messages has no 'user' message"
    MAX_TOKENS = "sampling.max_tokens is {value}; expected 1..{limit}"
    TEMPERATURE = "sampling.temperature is {value}; expected 0..2 (0 = greedy)"
    TOP_P = "sampling.top_p is {value}; expected a value in (0, 1]"
    TOO_MANY_STOPS = "sampling.stop has {value} strings; at most {limit}"
    BAD_STOP = "sampling.stop[{index}] is {value!r}; expected 1..{limit} characters"
    REQUEST_ID = "request_id is {value!r}; expected at most {limit} printable characters"
    TOP_K = "retrieval.top_k is {value}; expected 1..{limit} (0 = server default)"
    MIN_SCORE = "retrieval.min_score is {value}; expected a finite number"
    EMPTY_QUERY = "query is empty"
    NO_CONTINUATIONS = "continuations is empty"
    EMPTY_CONTINUATION = "continuations[{index}] is empty"

    def format(self, **values: object) -> str:
        return self.value.format(**values)


@dataclass
class Problems:
    items: list[str] = field(default_factory=list)

    def add(self, problem: Problem, **values: object) -> None:
        self.items.append(problem.format(**values))

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidArgument("; ".join(self.items))


@dataclass(frozen=True)
class SamplingInput:
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()


def check_messages(messages: Sequence[tuple[str, str]], problems: Problems) -> None:
    if not messages:
        problems.add(Problem.NO_MESSAGES)
        return
    for index, (role, content) in enumerate(messages):
        if role not in ROLES:
            problems.add(Problem.BAD_ROLE, index=index, value=role)
        if not content.strip():
            problems.add(Problem.EMPTY_CONTENT, index=index)
    if not any(role == "user" for role, _ in messages):
        problems.add(Problem.NO_USER_MESSAGE)


def check_sampling(sampling: SamplingInput, max_total_tokens: int, problems: Problems) -> None:
    if sampling.max_tokens is not None and not 1 <= sampling.max_tokens <= max_total_tokens:
        problems.add(Problem.MAX_TOKENS, value=sampling.max_tokens, limit=max_total_tokens)
    if sampling.temperature is not None and not (
        math.isfinite(sampling.temperature) and 0 <= sampling.temperature <= 2
    ):
        problems.add(Problem.TEMPERATURE, value=sampling.temperature)
    if sampling.top_p is not None and not (math.isfinite(sampling.top_p) and 0 < sampling.top_p <= 1):
        problems.add(Problem.TOP_P, value=sampling.top_p)
    if len(sampling.stop) > MAX_STOP_STRINGS:
        problems.add(Problem.TOO_MANY_STOPS, value=len(sampling.stop), limit=MAX_STOP_STRINGS)
    for index, stop in enumerate(sampling.stop):
        if not 1 <= len(stop) <= MAX_STOP_LENGTH:
            problems.add(Problem.BAD_STOP, index=index, value=stop, limit=MAX_STOP_LENGTH)


def check_request_id(request_id: str, problems: Problems) -> None:
    if len(request_id) > MAX_REQUEST_ID_LENGTH or not request_id.isprintable():
        problems.add(Problem.REQUEST_ID, value=request_id[:200], limit=MAX_REQUEST_ID_LENGTH)


def check_top_k(top_k: int, limit: int, problems: Problems) -> None:
    if not 0 <= top_k <= limit:
        problems.add(Problem.TOP_K, value=top_k, limit=limit)


def check_min_score(min_score: float, problems: Problems) -> None:
    if not math.isfinite(min_score):
        problems.add(Problem.MIN_SCORE, value=min_score)
