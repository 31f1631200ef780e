"""Request validation: every message in one enum, all problems collected and raised once.

:class:`Problems` is the one collector for every domain's checks: requests here, experiment
definitions and feedback in :mod:`hybrid_assistant.server.experiments.model`. Each domain keeps
its own message enum, whose members format themselves (:class:`ProblemMessage`), so each decides
how the bad values it quotes are cut; collecting, capping and raising are the same everywhere.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from hybrid_assistant.adapters.errors import MAX_ECHO_CHARS, MAX_LISTED_PROBLEMS
from hybrid_assistant.retrieval.search import MAX_FILTER_KEY_LENGTH, MAX_FILTER_KEYS, MAX_FILTER_VALUE_LENGTH
from hybrid_assistant.server.errors import InvalidArgument

if TYPE_CHECKING:
    from hybrid_assistant.server.core_types import SamplingInput

ROLES = ("system", "user", "assistant")
MAX_STOP_STRINGS = 8
MAX_STOP_LENGTH = 128
MAX_REQUEST_ID_LENGTH = 128
# metadata_filter (Retrieve, Generate/Score retrieval): each key is one SQL term; SQLite refuses
# more than 500 in one query. The bounds are retrieval.search's, checked here first for a clear status.
MAX_METADATA_FILTER_KEYS = MAX_FILTER_KEYS
MAX_METADATA_KEY_CHARS = MAX_FILTER_KEY_LENGTH
MAX_METADATA_VALUE_CHARS = MAX_FILTER_VALUE_LENGTH
MAX_QUERY_CHARS = 16_384  # Retrieve's query
MAX_DELETE_IDS = 10_000  # document ids per DeleteDocuments call
MAX_DOCUMENT_ID_CHARS = 1024  # as retrieval.ingest.MAX_ID_LENGTH
MAX_MESSAGES = 256
MAX_PASSAGES = 64  # caller-supplied context passages per request
MAX_PASSAGE_CHARS = 65_536
MAX_CONTINUATIONS = 64
MAX_CONTINUATION_CHARS = 16_384
# Sampling below this temperature is greedy (as vLLM does): logits / T overflows float32 long
# before T reaches 0 (1e-38 made every probability NaN), and such a T already picks the argmax.
GREEDY_BELOW_TEMPERATURE = 1e-5
# Bad values are echoed in error messages cut to MAX_ECHO_CHARS, and at most MAX_LISTED_PROBLEMS
# problems are listed (the same bounds as adapter validation): a status message past ~16 KB reaches
# the client as RESOURCE_EXHAUSTED.


class BoundedMessage(enum.Enum):
    """Base of a message enum whose members format the caller's values cut for echoing (:func:`bounded`)."""

    def format(self, **values: object) -> str:
        return str(self.value).format(**{k: bounded(v) for k, v in values.items()})


class Problem(BoundedMessage):
    NO_MESSAGES = "messages is empty: send at least one user message"
    TOO_MANY_MESSAGES = "messages has {value} entries; at most {limit}"
    BAD_ROLE = "messages[{index}].role is {value!r}; expected one of " + ", ".join(ROLES)
    EMPTY_CONTENT = "messages[{index}].content is empty"
    NO_USER_MESSAGE = "messages has no 'user' message"
    MAX_TOKENS = "sampling.max_tokens is {value}; expected 1..{limit}"
    TEMPERATURE = "sampling.temperature is {value}; expected 0..2 (0 = greedy)"
    TOP_P = "sampling.top_p is {value}; expected a value in (0, 1]"
    TOO_MANY_STOPS = "sampling.stop has {value} strings; at most {limit}"
    BAD_STOP = "sampling.stop[{index}] is {value!r}; expected 1..{limit} characters"
    MIN_TOKENS = "sampling.min_tokens is {value}; expected 0..{limit}"
    MIN_ABOVE_MAX = "sampling.min_tokens ({value}) exceeds sampling.max_tokens ({limit})"
    REQUEST_ID = "request_id is {value!r}; expected at most {limit} printable characters"
    TOP_K = "retrieval.top_k is {value}; expected 1..{limit} (0 = server default)"
    MIN_SCORE = "retrieval.min_score is {value}; expected a finite number"
    EMPTY_QUERY = "query is empty"
    LONG_QUERY = "query has {value} characters; at most {limit}"
    FILTER_KEYS = "{field} has {value} keys; at most {limit}"
    FILTER_KEY = "{field} key {value!r} has {length} characters; expected 1..{limit}"
    FILTER_VALUE = "{field}[{key!r}] has {length} characters; at most {limit}"
    TOO_MANY_IDS = "ids has {value} entries; at most {limit} per call"
    DOCUMENT_ID = "ids[{index}] is {value!r}; expected 1..{limit} characters"
    NO_CONTINUATIONS = "continuations is empty"
    EMPTY_CONTINUATION = "continuations[{index}] is empty"
    TOO_MANY_CONTINUATIONS = "continuations has {value} entries; at most {limit}"
    LONG_CONTINUATION = "continuations[{index}] has {value} characters; at most {limit}"
    TOO_MANY_PASSAGES = "retrieval.passages has {value} entries; at most {limit}"
    LONG_PASSAGE = "retrieval.passages[{index}].text has {value} characters; at most {limit}"


class _Echo(str):
    """A bad value cut for echoing; its repr is the cut repr of the original (no quotes added twice)."""

    def __repr__(self) -> str:
        return str(self)


def bounded(value: object) -> object:
    """``value`` as it may appear in an error message: strings (and their reprs) cut to MAX_ECHO_CHARS."""
    if isinstance(value, str):
        text = repr(value)
        if len(text) <= MAX_ECHO_CHARS:
            return value
        return _Echo(f"{text[:MAX_ECHO_CHARS]}... ({len(value)} characters)")
    return value


class ProblemMessage(Protocol):
    """A member of a domain's message enum: formats itself with the values it shows."""

    def format(self, **values: object) -> str: ...


@dataclass
class Problems:
    """Every problem found in one input; :meth:`raise_if_any` raises them as one INVALID_ARGUMENT
    listing at most MAX_LISTED_PROBLEMS (and counting the rest)."""

    items: list[str] = field(default_factory=list)

    def add(self, problem: ProblemMessage, **values: object) -> None:
        self.items.append(problem.format(**values))

    def raise_if_any(self) -> None:
        if self.items:
            shown = self.items[:MAX_LISTED_PROBLEMS]
            more = len(self.items) - len(shown)
            raise InvalidArgument("; ".join(shown) + (f"; and {more} more problems" if more else ""))


def check_messages(messages: Sequence[tuple[str, str]], problems: Problems) -> None:
    if not messages:
        problems.add(Problem.NO_MESSAGES)
        return
    if len(messages) > MAX_MESSAGES:
        problems.add(Problem.TOO_MANY_MESSAGES, value=len(messages), limit=MAX_MESSAGES)
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
    if sampling.min_tokens is not None:
        if not 0 <= sampling.min_tokens <= max_total_tokens:
            problems.add(Problem.MIN_TOKENS, value=sampling.min_tokens, limit=max_total_tokens)
        elif sampling.max_tokens is not None and sampling.min_tokens > sampling.max_tokens:
            problems.add(Problem.MIN_ABOVE_MAX, value=sampling.min_tokens, limit=sampling.max_tokens)
    if sampling.temperature is not None and not (
        math.isfinite(sampling.temperature) and 0 <= sampling.temperature <= 2
    ):
        problems.add(Problem.TEMPERATURE, value=sampling.temperature)
    if sampling.top_p is not None and not (math.isfinite(sampling.top_p) and 0 < sampling.top_p <= 1):
        problems.add(Problem.TOP_P, value=sampling.top_p)
    if len(sampling.stop) > MAX_STOP_STRINGS:
        problems.add(Problem.TOO_MANY_STOPS, value=len(sampling.stop), limit=MAX_STOP_STRINGS)
    for index, stop in enumerate(sampling.stop[: MAX_STOP_STRINGS + 1]):
        if not 1 <= len(stop) <= MAX_STOP_LENGTH:
            problems.add(Problem.BAD_STOP, index=index, value=stop, limit=MAX_STOP_LENGTH)


def check_request_id(request_id: str, problems: Problems) -> None:
    if len(request_id) > MAX_REQUEST_ID_LENGTH or not request_id.isprintable():
        problems.add(Problem.REQUEST_ID, value=request_id, limit=MAX_REQUEST_ID_LENGTH)


def check_top_k(top_k: int, limit: int, problems: Problems) -> None:
    if not 0 <= top_k <= limit:
        problems.add(Problem.TOP_K, value=top_k, limit=limit)


def check_min_score(min_score: float, problems: Problems) -> None:
    if not math.isfinite(min_score):
        problems.add(Problem.MIN_SCORE, value=min_score)


def check_passages(texts: Sequence[str], problems: Problems) -> None:
    if len(texts) > MAX_PASSAGES:
        problems.add(Problem.TOO_MANY_PASSAGES, value=len(texts), limit=MAX_PASSAGES)
        return
    for index, text in enumerate(texts):
        if len(text) > MAX_PASSAGE_CHARS:
            problems.add(Problem.LONG_PASSAGE, index=index, value=len(text), limit=MAX_PASSAGE_CHARS)


def check_continuations(continuations: Sequence[str], problems: Problems) -> None:
    if not continuations:
        problems.add(Problem.NO_CONTINUATIONS)
    if len(continuations) > MAX_CONTINUATIONS:
        problems.add(Problem.TOO_MANY_CONTINUATIONS, value=len(continuations), limit=MAX_CONTINUATIONS)
        return
    for index, continuation in enumerate(continuations):
        if not continuation:
            problems.add(Problem.EMPTY_CONTINUATION, index=index)
        elif len(continuation) > MAX_CONTINUATION_CHARS:
            problems.add(
                Problem.LONG_CONTINUATION, index=index, value=len(continuation), limit=MAX_CONTINUATION_CHARS
            )


def effective_temperature(temperature: float) -> float:
    """The temperature an engine samples at: below GREEDY_BELOW_TEMPERATURE it is greedy (0)."""
    return 0.0 if temperature < GREEDY_BELOW_TEMPERATURE else temperature


def check_metadata_filter(
    metadata_filter: Mapping[str, str], problems: Problems, *, field: str = "retrieval.metadata_filter"
) -> None:
    if len(metadata_filter) > MAX_METADATA_FILTER_KEYS:
        problems.add(
            Problem.FILTER_KEYS, field=field, value=len(metadata_filter), limit=MAX_METADATA_FILTER_KEYS
        )
        return
    for key, value in metadata_filter.items():
        if not 1 <= len(key) <= MAX_METADATA_KEY_CHARS:
            problems.add(
                Problem.FILTER_KEY, field=field, value=key, length=len(key), limit=MAX_METADATA_KEY_CHARS
            )
        if len(value) > MAX_METADATA_VALUE_CHARS:
            problems.add(
                Problem.FILTER_VALUE, field=field, key=key, length=len(value), limit=MAX_METADATA_VALUE_CHARS
            )


def check_query(query: str, problems: Problems) -> None:
    if not query.strip():
        problems.add(Problem.EMPTY_QUERY)
    elif len(query) > MAX_QUERY_CHARS:
        problems.add(Problem.LONG_QUERY, value=len(query), limit=MAX_QUERY_CHARS)


def check_document_ids(ids: Sequence[str], problems: Problems) -> None:
    if len(ids) > MAX_DELETE_IDS:
        problems.add(Problem.TOO_MANY_IDS, value=len(ids), limit=MAX_DELETE_IDS)
        return
    for index, doc_id in enumerate(ids):
        if not 1 <= len(doc_id) <= MAX_DOCUMENT_ID_CHARS:
            problems.add(Problem.DOCUMENT_ID, index=index, value=doc_id, limit=MAX_DOCUMENT_ID_CHARS)
