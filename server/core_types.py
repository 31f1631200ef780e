"""The answering core's value types: what a servicer hands the core
(:class:`~hybrid_assistant.server.assistant.AssistantCore`), what it gets back, and the arm plan
an experiment picks for a request.

They live apart from the core because several rooms use them - protobuf conversion, experiments
(an arm's retrieval settings), metrics, the knowledge index - and none of those should have to
import the core, nor the core's own imports (the engine, prompt building), to name a request.
Nothing here imports the rest of the package at run time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hybrid_assistant.server.engines.types import ContinuationScore, FinishReason
    from hybrid_assistant.server.prompt import ContextPassage


@dataclass(frozen=True)
class SamplingInput:
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    min_tokens: int | None = None  # None = 0
    ignore_eos: bool = False


@dataclass(frozen=True)
class RetrievalInput:
    enabled: bool = False
    top_k: int = 0  # 0 = server default
    mode: str = ""  # "dense" | "lexical" | "hybrid" | "" (server default)
    min_score: float = 0.0
    metadata_filter: Mapping[str, str] = field(default_factory=dict)
    passages: tuple[ContextPassage, ...] = ()  # caller-supplied context instead of searching


@dataclass(frozen=True)
class GenerateInput:
    messages: tuple[tuple[str, str], ...]
    request_id: str = ""
    adapter: str | None = None  # None: not set by the caller
    sampling: SamplingInput = field(default_factory=SamplingInput)
    retrieval: RetrievalInput = field(default_factory=RetrievalInput)
    experiment: str = ""
    subject_key: str = ""


@dataclass(frozen=True)
class ScoreInput:
    messages: tuple[tuple[str, str], ...]
    continuations: tuple[str, ...]
    request_id: str = ""
    adapter: str | None = None
    retrieval: RetrievalInput = field(default_factory=RetrievalInput)


@dataclass(frozen=True)
class GenerateOutcome:
    request_id: str
    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    context_tokens: int
    adapter: str
    queue_ms: float
    ttft_ms: float
    total_ms: float
    retrieval_ms: float
    contexts: list[ContextPassage]
    model: str
    experiment: str = ""
    arm: str = ""


@dataclass(frozen=True)
class ScoreOutcome:
    request_id: str
    scores: list[ContinuationScore]
    contexts: list[ContextPassage]
    adapter: str


@dataclass(frozen=True)
class ArmPlan:
    """What a request will actually run: the adapter and the retrieval settings."""

    adapter: str
    retrieval: RetrievalInput
    experiment: str = ""
    arm: str = ""
    in_test: bool = False  # assigned by a running experiment: counts in its report


def arm_name(adapter: str, retrieval: RetrievalInput) -> str:
    """Canonical arm label: base, adapter:NAME, rag, adapter:NAME+rag (context = caller passages)."""
    parts = [f"adapter:{adapter}"] if adapter else []
    if retrieval.passages:
        parts.append("context")
    elif retrieval.enabled:
        parts.append("rag")
    return "+".join(parts) or "base"
