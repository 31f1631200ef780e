"""The OpenAI API's request and response shapes, as pydantic models (the subset this server serves).

Requests are strict (no "1" for 1, no NaN) and closed: a field OpenAI defines that the server
does not support is *declared* here with the values that ask for nothing (``n: 1``,
``logprobs: false``, ``tools: []``, ...) and any other value fails validation with a message
naming the field, and a field nobody defines fails as unknown. Pydantic collects every failure of
one body, so a client sees all its problems at once (``server.http.errors`` formats them). The
server's own extras (``retrieval``, ``top_k``, ``mode``, ``experiment``, ``subject_key``) and
vLLM's sampling extras (``min_tokens``, ``ignore_eos``) are ordinary fields; the answer's extras
(``citations``, ``adapter``, ``arm``, ``experiment``, ``request_id``) are fields OpenAI's clients
keep as extra attributes.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

# Why a field is refused: the message says what the server does instead, where it can.
UNSUPPORTED_TYPE = "unsupported_parameter"


def unsupported(*neutral: Any, why: str = "") -> AfterValidator:
    """Metadata for an OpenAI field this server does not implement: the values of ``neutral``
    (and null) ask for nothing and pass; any other is refused, never accepted and ignored.
    Annotate as ``Annotated[Any, unsupported(...)]``; the error's location names the field."""
    allowed = (None, *neutral)
    message = "not supported by this server" + (f" ({why})" if why else "")

    def check(value: Any) -> Any:
        if any(value == n and type(value) is type(n) for n in allowed):
            return value
        raise PydanticCustomError(UNSUPPORTED_TYPE, message)

    return AfterValidator(check)


class _Request(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)


class StreamOptions(_Request):
    include_usage: bool | None = None
    """Send a last chunk (empty ``choices``) with the request's ``usage``."""
    include_obfuscation: bool | None = None
    """OpenAI pads chunks against side channels when true; this server never pads (accepted, no-op)."""


class TextPart(_Request):
    type: Literal["text"]
    text: str


class ChatMessage(_Request):
    role: str
    """system, developer (read as system), user or assistant."""
    content: str | list[TextPart]
    """A string, or text parts (joined with no separator); images and audio are not supported."""
    name: Annotated[Any, unsupported(why="participant names are not passed to the model")] = None
    refusal: Annotated[Any, unsupported()] = None
    tool_calls: Annotated[Any, unsupported([], why="no tool calling")] = None
    function_call: Annotated[Any, unsupported(why="no tool calling")] = None
    audio: Annotated[Any, unsupported(why="text only")] = None


class ServerExtras(_Request):
    """The server's own body fields (OpenAI's clients send them with ``extra_body={...}``)."""

    retrieval: bool = False
    """Retrieve passages from the knowledge index for the last user message and cite them."""
    top_k: int | None = None
    """Passages to retrieve (retrieval only; default: the server's)."""
    mode: Literal["dense", "lexical", "hybrid"] | None = None
    """Search mode (retrieval only; default: the server's)."""
    experiment: str = ""
    """A running A/B experiment: it picks the arm (adapter, retrieval) for ``subject_key``."""
    subject_key: str = ""
    """The stable user or session id an experiment assigns by (default: ``user``)."""


class GenerationFields(ServerExtras):
    model: str
    """The base model's name or a loaded adapter's (see GET /v1/models)."""
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    min_tokens: int | None = None
    """vLLM's extra: neither EOS nor a stop string ends the answer before this many tokens."""
    ignore_eos: bool = False
    """vLLM's extra: generate past EOS until max_tokens (benchmarks: every answer the same length)."""
    n: Annotated[int | None, unsupported(1, why="one choice per request: n = 1")] = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    """A caller's end-user id; the subject key of experiment requests that give none."""
    frequency_penalty: Annotated[Any, unsupported(0, 0.0)] = None
    presence_penalty: Annotated[Any, unsupported(0, 0.0)] = None
    logit_bias: Annotated[Any, unsupported({})] = None
    logprobs: Annotated[Any, unsupported(False, why="no log probabilities; gRPC Score gives them")] = None


class ChatCompletionRequest(GenerationFields):
    messages: list[ChatMessage]
    max_completion_tokens: int | None = None
    """The same as ``max_tokens`` (OpenAI's newer name); give one, or both equal."""
    top_logprobs: Annotated[Any, unsupported(0, why="no log probabilities")] = None
    tools: Annotated[Any, unsupported([], why="no tool calling")] = None
    tool_choice: Annotated[Any, unsupported("none", why="no tool calling")] = None
    parallel_tool_calls: Annotated[Any, unsupported(why="no tool calling")] = None
    functions: Annotated[Any, unsupported([], why="no tool calling")] = None
    function_call: Annotated[Any, unsupported("none", why="no tool calling")] = None
    response_format: Annotated[Any, unsupported({"type": "text"}, why="no structured output")] = None
    modalities: Annotated[Any, unsupported(["text"], why="text only")] = None
    audio: Annotated[Any, unsupported(why="text only")] = None
    prediction: Annotated[Any, unsupported()] = None
    reasoning_effort: Annotated[Any, unsupported(why="the model does not reason")] = None
    verbosity: Annotated[Any, unsupported()] = None
    web_search_options: Annotated[Any, unsupported(why="use retrieval: true")] = None
    service_tier: Annotated[Any, unsupported("auto", "default", why="there is one tier")] = None
    store: Annotated[Any, unsupported(False, why="completions are not stored")] = None
    metadata: Annotated[Any, unsupported({}, why="completions are not stored")] = None
    prompt_cache_key: Annotated[Any, unsupported()] = None
    safety_identifier: Annotated[Any, unsupported(why="use user")] = None


class CompletionRequest(GenerationFields):
    prompt: str | list[str]
    """One prompt (a list of exactly one is accepted too). It is sent as one user message."""
    best_of: Annotated[Any, unsupported(1)] = None
    echo: Annotated[Any, unsupported(False)] = None
    suffix: Annotated[Any, unsupported("", why="no insertion")] = None


class LoadLoraRequest(_Request):
    """vLLM's ``POST /v1/load_lora_adapter`` body."""

    lora_name: str
    lora_path: str
    """A directory under one of the server's adapter roots (absolute, or relative to a root)."""
    load_inplace: bool = False
    """Replace an adapter of the same name (vLLM's flag); otherwise that name is a 409."""
    pin: bool = False
    """Never evict it to make room for others (this server's extra)."""


class UnloadLoraRequest(_Request):
    """vLLM's ``POST /v1/unload_lora_adapter`` body."""

    lora_name: str


# ---------------------------------------------------------------------------- responses


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    context_tokens: int = 0
    """Of the prompt tokens, those the retrieved (or given) passages took (this server's extra)."""


class Citation(BaseModel):
    """A passage the answer's prompt carried, numbered as the prompt numbered it (``index``)."""

    document_id: str
    chunk_id: str
    score: float
    index: int
    text: str
    metadata: dict[str, str] = Field(default_factory=dict)


class _Answer(BaseModel):
    """The server's extras on a final answer (or a stream's finishing chunk)."""

    request_id: str
    """The id the request log and experiments' feedback know the request by."""
    adapter: str
    """The adapter that answered ("" = the base model)."""
    arm: str
    experiment: str
    citations: list[Citation]


def now() -> int:
    return int(time.time())


class ChatMessageOut(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    refusal: None = None


class ChatChoice(BaseModel):
    index: int = 0
    message: ChatMessageOut
    finish_reason: str
    logprobs: None = None


class ChatCompletion(_Answer):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=now)
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: str


class ChunkDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: ChunkDelta
    finish_reason: str | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    system_fingerprint: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


class ChatCompletionLastChunk(ChatCompletionChunk, _Answer):
    """The chunk with the finish reason, carrying the server's extras."""


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: str | None = None
    logprobs: None = None


class Completion(_Answer):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=now)
    model: str
    choices: list[CompletionChoice]
    usage: Usage
    system_fingerprint: str


class CompletionChunk(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    system_fingerprint: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class CompletionLastChunk(CompletionChunk, _Answer):
    """The chunk with the finish reason, carrying the server's extras."""


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "hybrid-assistant"
    root: str
    """The base model (for an adapter: the model it adapts), as vLLM reports it."""
    parent: str | None = None
    """None for the base model; the base model's id for an adapter (as vLLM)."""
    max_model_len: int
    defaults: dict[str, Any] = Field(default_factory=dict)
    """The sampling a request gets for each field it leaves out (max_tokens, temperature, top_p, ...)."""


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


class Health(BaseModel):
    status: Literal["serving", "not_serving"]
