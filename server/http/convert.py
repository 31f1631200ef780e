"""OpenAI request bodies -> the core's inputs, and the core's outcomes -> OpenAI answers.

The HTTP twin of ``server/convert.py`` (which does the same for protobuf): the routes only call
these. What the schema cannot say alone is checked here, every problem collected at once:
``max_tokens`` and ``max_completion_tokens`` that disagree, retrieval options without
``retrieval: true``, ``stream_options`` without ``stream``, a batch of prompts.

How OpenAI's fields map:

* ``model``: the base model (adapter unset, so an experiment may pick the arm) or an adapter;
  the route resolves it (:func:`adapter_for`).
* messages: ``developer`` is read as ``system``; text parts are joined.
* ``/v1/completions``' ``prompt`` becomes one user message: the core always applies the model's
  chat template (the instruct model answers a prompt as it answers a chat turn).
* ``user`` is the request's ``subject_key`` when the body gives none (the request log records it,
  and experiments assign by it).
"""

from __future__ import annotations

from typing import Any

from hybrid_assistant.server.core_types import GenerateInput, GenerateOutcome, RetrievalInput, SamplingInput
from hybrid_assistant.server.http.schemas import (
    ChatCompletionRequest,
    ChatMessage,
    Citation,
    CompletionRequest,
    GenerationFields,
    ServerExtras,
    Usage,
)
from hybrid_assistant.server.prompt import ContextPassage
from hybrid_assistant.server.validation import BoundedMessage, Problems

_ROLES = {"developer": "system"}


class HttpProblem(BoundedMessage):
    """What the OpenAI shape allows but this server's reading of it does not."""

    MAX_TOKENS_DISAGREE = "max_tokens ({a}) and max_completion_tokens ({b}) differ; give one of them"
    RETRIEVAL_OPTION = "{field} is set but retrieval is not true; set retrieval: true to retrieve"
    STREAM_OPTIONS = "stream_options is set but stream is not true"
    PROMPTS = "prompt is a list of {value} prompts; send exactly one prompt per request"


def _content(message: ChatMessage) -> str:
    if isinstance(message.content, str):
        return message.content
    return "".join(part.text for part in message.content)


def _sampling(body: GenerationFields, max_tokens: int | None) -> SamplingInput:
    stop = body.stop if body.stop is not None else ()
    return SamplingInput(
        max_tokens=max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        seed=body.seed,
        stop=(stop,) if isinstance(stop, str) else tuple(stop),
        min_tokens=body.min_tokens,
        ignore_eos=body.ignore_eos,
    )


def _retrieval(body: ServerExtras, problems: Problems) -> RetrievalInput:
    if not body.retrieval:
        for field in ("top_k", "mode"):
            if getattr(body, field) is not None:
                problems.add(HttpProblem.RETRIEVAL_OPTION, field=field)
        return RetrievalInput()
    return RetrievalInput(enabled=True, top_k=body.top_k or 0, mode=body.mode or "")


def _common(
    body: GenerationFields,
    messages: tuple[tuple[str, str], ...],
    max_tokens: int | None,
    adapter: str | None,
    problems: Problems,
) -> GenerateInput:
    if body.stream_options is not None and not body.stream:
        problems.add(HttpProblem.STREAM_OPTIONS)
    retrieval = _retrieval(body, problems)
    problems.raise_if_any()
    return GenerateInput(
        messages=messages,
        adapter=adapter,
        sampling=_sampling(body, max_tokens),
        retrieval=retrieval,
        experiment=body.experiment,
        subject_key=body.subject_key or body.user or "",
    )


def chat_input(body: ChatCompletionRequest, adapter: str | None) -> GenerateInput:
    """The core's input for a chat completion (InvalidArgument listing every problem)."""
    problems = Problems()
    max_tokens = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    if body.max_tokens is not None and body.max_completion_tokens not in (None, body.max_tokens):
        problems.add(HttpProblem.MAX_TOKENS_DISAGREE, a=body.max_tokens, b=body.max_completion_tokens)
    messages = tuple((_ROLES.get(m.role, m.role), _content(m)) for m in body.messages)
    return _common(body, messages, max_tokens, adapter, problems)


def completion_input(body: CompletionRequest, adapter: str | None) -> GenerateInput:
    """The core's input for a text completion: the prompt as one user message."""
    problems = Problems()
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if len(prompts) != 1:
        problems.add(HttpProblem.PROMPTS, value=len(prompts))
    messages = (("user", prompts[0]),) if len(prompts) == 1 else ()
    return _common(body, messages, body.max_tokens, adapter, problems)


def usage(outcome: GenerateOutcome) -> Usage:
    return Usage(
        prompt_tokens=outcome.prompt_tokens,
        completion_tokens=outcome.completion_tokens,
        total_tokens=outcome.prompt_tokens + outcome.completion_tokens,
        context_tokens=outcome.context_tokens,
    )


def citation(passage: ContextPassage) -> Citation:
    return Citation(
        document_id=passage.document_id,
        chunk_id=passage.chunk_id,
        score=passage.score,
        index=passage.index,
        text=passage.text,
        metadata=dict(passage.metadata),
    )


def answer_extras(outcome: GenerateOutcome) -> dict[str, Any]:
    """The server's fields on a final answer: what the request log knows it by, and what answered."""
    return {
        "request_id": outcome.request_id,
        "adapter": outcome.adapter,
        "arm": outcome.arm,
        "experiment": outcome.experiment,
        "citations": [citation(p) for p in outcome.contexts],
    }
