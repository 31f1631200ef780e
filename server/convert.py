"""Protobuf <-> domain conversion, at the edge and nowhere else.

Servicers only call these (the experiments service has its own in ``server.experiments``).
A domain dataclass whose fields are exactly its message's fields (same names, same meaning)
goes through :func:`_fields_to_pb`, so a field added on one side and not the other fails the
converter's test instead of being dropped silently.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from hybrid_assistant.retrieval.types import DeleteSummary, Document, IndexStats, IngestSummary
from hybrid_assistant.server.adapter_registry import AdapterInfo
from hybrid_assistant.server.core_types import (
    GenerateInput,
    GenerateOutcome,
    RetrievalInput,
    SamplingInput,
    ScoreInput,
    ScoreOutcome,
)
from hybrid_assistant.server.engines.types import FinishReason
from hybrid_assistant.server.prompt import ContextPassage
from hybrid_assistant.v1 import assistant_pb2 as pb

MODES = {
    pb.SEARCH_MODE_UNSPECIFIED: "",
    pb.SEARCH_MODE_DENSE: "dense",
    pb.SEARCH_MODE_LEXICAL: "lexical",
    pb.SEARCH_MODE_HYBRID: "hybrid",
}
MODE_TO_PB = {name: value for value, name in MODES.items() if name}
_FINISH = {FinishReason.STOP: pb.FINISH_REASON_STOP, FinishReason.LENGTH: pb.FINISH_REASON_LENGTH}
Message = TypeVar("Message")


def _fields_to_pb(message: Callable[..., Message], value: Any) -> Message:
    """``message`` built from every field of the dataclass ``value``, by name (shallow: no copies)."""
    return message(**{f.name: getattr(value, f.name) for f in dataclasses.fields(value)})


def messages(items: list[pb.ChatMessage]) -> tuple[tuple[str, str], ...]:
    return tuple((m.role, m.content) for m in items)


def sampling(params: pb.SamplingParams) -> SamplingInput:
    return SamplingInput(
        max_tokens=params.max_tokens if params.HasField("max_tokens") else None,
        temperature=params.temperature if params.HasField("temperature") else None,
        top_p=params.top_p if params.HasField("top_p") else None,
        seed=params.seed if params.HasField("seed") else None,
        stop=tuple(params.stop),
        min_tokens=params.min_tokens if params.HasField("min_tokens") else None,
        ignore_eos=params.ignore_eos,
    )


def passage_from_pb(p: pb.Passage) -> ContextPassage:
    return ContextPassage(p.document_id, p.chunk_id, p.score, p.text, dict(p.metadata), p.index)


def passage_to_pb(p: ContextPassage) -> pb.Passage:
    return _fields_to_pb(pb.Passage, p)


def retrieval(options: pb.RetrievalOptions) -> RetrievalInput:
    return RetrievalInput(
        enabled=options.enabled or bool(options.passages),
        top_k=options.top_k,
        mode=MODES.get(options.mode, ""),
        min_score=options.min_score,
        metadata_filter=dict(options.metadata_filter),
        passages=tuple(passage_from_pb(p) for p in options.passages),
    )


def retrieval_to_pb(options: RetrievalInput) -> pb.RetrievalOptions:
    return pb.RetrievalOptions(
        enabled=options.enabled,
        top_k=options.top_k,
        mode=MODE_TO_PB.get(options.mode, pb.SEARCH_MODE_UNSPECIFIED),
        min_score=options.min_score,
        metadata_filter=dict(options.metadata_filter),
        passages=[passage_to_pb(p) for p in options.passages],
    )


def generate_input(request: pb.GenerateRequest) -> GenerateInput:
    return GenerateInput(
        messages=messages(list(request.messages)),
        request_id=request.request_id,
        adapter=request.adapter if request.HasField("adapter") else None,
        sampling=sampling(request.sampling),
        retrieval=retrieval(request.retrieval),
        experiment=request.experiment,
        subject_key=request.subject_key,
    )


def score_input(request: pb.ScoreRequest) -> ScoreInput:
    return ScoreInput(
        messages=messages(list(request.messages)),
        continuations=tuple(request.continuations),
        request_id=request.request_id,
        adapter=request.adapter if request.HasField("adapter") else None,
        retrieval=retrieval(request.retrieval),
    )


def outcome_to_pb(outcome: GenerateOutcome) -> pb.GenerateResponse:
    return pb.GenerateResponse(
        request_id=outcome.request_id,
        text=outcome.text,
        finish_reason=_FINISH[outcome.finish_reason],
        usage=pb.Usage(
            prompt_tokens=outcome.prompt_tokens,
            completion_tokens=outcome.completion_tokens,
            context_tokens=outcome.context_tokens,
        ),
        adapter=outcome.adapter,
        timings=pb.Timings(
            queue_ms=outcome.queue_ms,
            ttft_ms=outcome.ttft_ms,
            total_ms=outcome.total_ms,
            retrieval_ms=outcome.retrieval_ms,
        ),
        contexts=[passage_to_pb(p) for p in outcome.contexts],
        model=outcome.model,
        experiment=outcome.experiment,
        arm=outcome.arm,
    )


def score_to_pb(outcome: ScoreOutcome) -> pb.ScoreResponse:
    return pb.ScoreResponse(
        request_id=outcome.request_id,
        scores=[
            pb.ContinuationScore(logprob=s.logprob, tokens=s.tokens, greedy=s.greedy) for s in outcome.scores
        ],
        contexts=[passage_to_pb(p) for p in outcome.contexts],
        adapter=outcome.adapter,
    )


def adapter_info_to_pb(info: AdapterInfo) -> pb.AdapterInfo:
    return _fields_to_pb(pb.AdapterInfo, info)


# ---------------------------------------------------------------------- knowledge


def document_from_pb(d: pb.Document) -> Document:
    return Document(id=d.id, text=d.text, metadata=dict(d.metadata), source=d.source)


def ingest_to_pb(summary: IngestSummary) -> pb.IngestResponse:
    return _fields_to_pb(pb.IngestResponse, summary)


def delete_to_pb(summary: DeleteSummary) -> pb.DeleteDocumentsResponse:
    return _fields_to_pb(pb.DeleteDocumentsResponse, summary)


def index_stats_to_pb(stats: IndexStats) -> pb.IndexStatsResponse:
    return _fields_to_pb(pb.IndexStatsResponse, stats)


def retrieve_to_pb(passages: Sequence[ContextPassage], took_ms: float) -> pb.RetrieveResponse:
    return pb.RetrieveResponse(passages=[passage_to_pb(p) for p in passages], took_ms=took_ms)
