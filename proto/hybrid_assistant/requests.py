"""Request builders shared by the sync and async clients (plain arguments -> protobuf)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from hybrid_assistant.v1 import assistant_pb2 as pb

Messages = str | Sequence[Mapping[str, str]] | Sequence[pb.ChatMessage]
Mode = Literal["dense", "lexical", "hybrid", ""]
_MODES = {
    "": pb.SEARCH_MODE_UNSPECIFIED,
    "dense": pb.SEARCH_MODE_DENSE,
    "lexical": pb.SEARCH_MODE_LEXICAL,
    "hybrid": pb.SEARCH_MODE_HYBRID,
}


def chat_messages(messages: Messages, system: str | None = None) -> list[pb.ChatMessage]:
    """A prompt string becomes one user message; dicts become ChatMessages."""
    out: list[pb.ChatMessage] = [pb.ChatMessage(role="system", content=system)] if system else []
    if isinstance(messages, str):
        return [*out, pb.ChatMessage(role="user", content=messages)]
    for m in messages:
        out.append(
            m if isinstance(m, pb.ChatMessage) else pb.ChatMessage(role=m["role"], content=m["content"])
        )
    return out


def retrieval_options(
    retrieval: bool | pb.RetrievalOptions | None = None,
    *,
    top_k: int = 0,
    mode: Mode = "",
    min_score: float = 0.0,
    metadata_filter: Mapping[str, str] | None = None,
    passages: Iterable[pb.Passage] = (),
) -> pb.RetrievalOptions | None:
    if isinstance(retrieval, pb.RetrievalOptions):
        return retrieval
    passages = list(passages)
    if not retrieval and not passages:
        return None
    return pb.RetrievalOptions(
        enabled=True,
        top_k=top_k,
        mode=_MODES[mode],
        min_score=min_score,
        metadata_filter=dict(metadata_filter or {}),
        passages=passages,
    )


def generate_request(
    messages: Messages,
    *,
    adapter: str | None = None,
    system: str | None = None,
    max_tokens: int | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    stop: Sequence[str] = (),
    min_tokens: int | None = None,
    ignore_eos: bool | None = None,
    retrieval: bool | pb.RetrievalOptions | None = None,
    top_k: int = 0,
    mode: Mode = "",
    passages: Iterable[pb.Passage] = (),
    experiment: str = "",
    subject_key: str = "",
    request_id: str = "",
) -> pb.GenerateRequest:
    sampling = pb.SamplingParams(stop=list(stop))
    if max_tokens is not None:
        sampling.max_tokens = max_tokens
    if temperature is not None:
        sampling.temperature = temperature
    if top_p is not None:
        sampling.top_p = top_p
    if seed is not None:
        sampling.seed = seed
    if min_tokens is not None:
        sampling.min_tokens = min_tokens
    if ignore_eos is not None:
        sampling.ignore_eos = ignore_eos
    request = pb.GenerateRequest(
        request_id=request_id,
        messages=chat_messages(messages, system),
        sampling=sampling,
        experiment=experiment,
        subject_key=subject_key,
    )
    if adapter is not None:
        request.adapter = adapter
    options = retrieval_options(retrieval, top_k=top_k, mode=mode, passages=passages)
    if options is not None:
        request.retrieval.CopyFrom(options)
    return request


def score_request(
    messages: Messages,
    continuations: Sequence[str],
    *,
    adapter: str | None = None,
    system: str | None = None,
    retrieval: bool | pb.RetrievalOptions | None = None,
    top_k: int = 0,
    passages: Iterable[pb.Passage] = (),
) -> pb.ScoreRequest:
    request = pb.ScoreRequest(messages=chat_messages(messages, system), continuations=list(continuations))
    if adapter is not None:
        request.adapter = adapter
    options = retrieval_options(retrieval, top_k=top_k, passages=passages)
    if options is not None:
        request.retrieval.CopyFrom(options)
    return request


def retrieve_request(
    query: str,
    *,
    top_k: int = 5,
    mode: Mode = "",
    min_score: float = 0.0,
    metadata_filter: Mapping[str, str] | None = None,
) -> pb.RetrieveRequest:
    return pb.RetrieveRequest(
        query=query,
        top_k=top_k,
        mode=_MODES[mode],
        min_score=min_score,
        metadata_filter=dict(metadata_filter or {}),
    )


def documents(items: Iterable[pb.Document | Mapping[str, object]]) -> Iterable[pb.IngestRequest]:
    for item in items:
        if isinstance(item, pb.Document):
            yield pb.IngestRequest(document=item)
            continue
        metadata = item.get("metadata") or {}
        assert isinstance(metadata, Mapping)
        yield pb.IngestRequest(
            document=pb.Document(
                id=str(item["id"]),
                text=str(item["text"]),
                metadata={str(k): str(v) for k, v in metadata.items()},
                source=str(item.get("source", "")),
            )
        )


ExperimentState = Literal["running", "paused", "stopped"]
_STATES = {
    "running": pb.EXPERIMENT_STATE_RUNNING,
    "paused": pb.EXPERIMENT_STATE_PAUSED,
    "stopped": pb.EXPERIMENT_STATE_STOPPED,
}


def experiment_arm(
    name: str,
    *,
    adapter: str | None = None,
    retrieval: bool = False,
    top_k: int = 0,
    mode: Mode = "",
    min_score: float = 0.0,
    metadata_filter: Mapping[str, str] | None = None,
    weight: float = 1.0,
    control: bool = False,
) -> pb.ExperimentArm:
    """One arm: an adapter (None or "" = the base model) x retrieval settings, with a traffic weight."""
    arm = pb.ExperimentArm(name=name, weight=weight, control=control)
    if adapter:
        arm.adapter = adapter
    if retrieval:
        arm.retrieval.CopyFrom(
            pb.RetrievalOptions(
                enabled=True,
                top_k=top_k,
                mode=_MODES[mode],
                min_score=min_score,
                metadata_filter=dict(metadata_filter or {}),
            )
        )
    return arm


def create_experiment_request(
    name: str, arms: Iterable[pb.ExperimentArm | Mapping[str, Any]], *, description: str = ""
) -> pb.CreateExperimentRequest:
    """Arms as :func:`experiment_arm` results or dicts of its arguments."""
    built = [a if isinstance(a, pb.ExperimentArm) else experiment_arm(**a) for a in arms]
    return pb.CreateExperimentRequest(
        experiment=pb.Experiment(name=name, arms=built, description=description)
    )


def update_experiment_request(
    name: str, *, state: ExperimentState | None = None, weights: Mapping[str, float] | None = None
) -> pb.UpdateExperimentRequest:
    return pb.UpdateExperimentRequest(
        name=name,
        state=_STATES[state] if state else pb.EXPERIMENT_STATE_UNSPECIFIED,
        weights=dict(weights or {}),
    )


def feedback_request(request_id: str, metric: str, value: float | bool) -> pb.RecordFeedbackRequest:
    return pb.RecordFeedbackRequest(request_id=request_id, metric=metric, value=float(value))


def export_request(
    experiment: str = "", *, since: float = 0.0, until: float = 0.0
) -> pb.ExportRequestLogRequest:
    return pb.ExportRequestLogRequest(experiment=experiment, since_unix=since, until_unix=until)
