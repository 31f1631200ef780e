"""Protobuf <-> domain conversion, at the edge and nowhere else."""

from __future__ import annotations

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


def messages(items: list[pb.ChatMessage]) -> tuple[tuple[str, str], ...]:
    return tuple((m.role, m.content) for m in items)


def sampling(params: pb.SamplingParams) -> SamplingInput:
    return SamplingInput(
        max_tokens=params.max_tokens if params.HasField("max_tokens") else None,
        temperature=params.temperature if params.HasField("temperature") else None,
        top_p=params.top_p if params.HasField("top_p") else None,
        seed=params.seed if params.HasField("seed") else None,
        stop=tuple(params.stop),
    )


def passage_from_pb(p: pb.Passage) -> ContextPassage:
    return ContextPassage(p.document_id, p.chunk_id, p.score, p.text, dict(p.metadata), p.index)


def passage_to_pb(p: ContextPassage) -> pb.Passage:
    return pb.Passage(
        document_id=p.document_id,
        chunk_id=p.chunk_id,
        score=p.score,
        text=p.text,
        metadata=dict(p.metadata),
        index=p.index,
    )


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
    return pb.AdapterInfo(
        name=info.name,
        path=info.path,
        resident=info.resident,
        pinned=info.pinned,
        rank=info.rank,
        target_modules=list(info.target_modules),
        base_model=info.base_model,
        in_flight=info.in_flight,
        last_used_unix=info.last_used_unix,
        load_ms=info.load_ms,
        fingerprint=info.fingerprint,
        metadata=info.metadata,
    )
