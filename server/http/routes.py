"""The OpenAI-compatible routes, over the same core, adapter registry and settings as gRPC.

========================================  =====================================================
``POST /v1/chat/completions``             chat; ``stream: true`` for server-sent events
``POST /v1/completions``                  a prompt, answered as one user message
``GET /v1/models``, ``/v1/models/{id}``   the base model and every loaded adapter
``POST /v1/load_lora_adapter``            vLLM's admin call: LoadAdapter (admin token)
``POST /v1/unload_lora_adapter``          vLLM's admin call: UnloadAdapter (admin token)
``GET /health``                           200 serving, 503 warming up or draining
``GET /metrics``                          Prometheus, unless ``metrics_port`` serves it apart
========================================  =====================================================

Each route converts (``server.http.convert``) and calls the core, as a gRPC servicer does:
validation, experiments' arm assignment, retrieval, the request log and metrics all happen
there, identically for both transports.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import grpc
from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from hybrid_assistant.server.auth import bearer_matches
from hybrid_assistant.server.core_types import GenerateInput, GenerateOutcome
from hybrid_assistant.server.errors import InvalidArgument, Unavailable
from hybrid_assistant.server.http import convert
from hybrid_assistant.server.http.errors import ApiError, from_exception
from hybrid_assistant.server.http.schemas import (
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionLastChunk,
    ChatCompletionRequest,
    ChatMessageOut,
    ChunkChoice,
    ChunkDelta,
    Completion,
    CompletionChoice,
    CompletionChunk,
    CompletionLastChunk,
    CompletionRequest,
    GenerationFields,
    Health,
    LoadLoraRequest,
    ModelCard,
    ModelList,
    UnloadLoraRequest,
)
from hybrid_assistant.server.http.streaming import EventStream, sse, until_disconnect

if TYPE_CHECKING:
    from pydantic import BaseModel

    from hybrid_assistant.server.adapter_registry import AdapterRegistry
    from hybrid_assistant.server.assistant import AssistantCore
    from hybrid_assistant.server.config import Settings
    from hybrid_assistant.v1 import assistant_pb2 as pb

Events = AsyncIterator[str | GenerateOutcome]


@dataclass(frozen=True)
class Shared:
    """What the routes share with the gRPC servicers (one of each per process)."""

    settings: Settings
    core: AssistantCore
    registry: AdapterRegistry
    server_info: Callable[[], pb.ServerInfo]


async def _outcome(events: Events) -> GenerateOutcome:
    """Run a generation to its end (the core logs it on the way out) and return its outcome."""
    outcome = None
    async for item in events:
        if isinstance(item, GenerateOutcome):
            outcome = item
    if outcome is None:
        raise RuntimeError("generation ended without an outcome")
    return outcome


class OpenAIRoutes:
    def __init__(self, shared: Shared) -> None:
        self._shared = shared
        self._core = shared.core
        self._registry = shared.registry
        self._token = shared.settings.admin_token
        self._started = int(time.time())

    def router(self) -> APIRouter:
        # A body without a Content-Type is read as JSON (curl -d sends a form type: set it).
        router = APIRouter(strict_content_type=False)
        post, get = ["POST"], ["GET"]
        router.add_api_route("/v1/chat/completions", self.chat_completions, methods=post)
        router.add_api_route("/v1/completions", self.completions, methods=post)
        router.add_api_route("/v1/models", self.models, methods=get, response_model=ModelList)
        router.add_api_route("/v1/models/{model_id:path}", self.model, methods=get, response_model=ModelCard)
        admin = [Depends(self.require_admin)]
        router.add_api_route(
            "/v1/load_lora_adapter", self.load_lora_adapter, methods=post, dependencies=admin
        )
        router.add_api_route(
            "/v1/unload_lora_adapter", self.unload_lora_adapter, methods=post, dependencies=admin
        )
        router.add_api_route("/health", self.health, methods=get, response_model=Health)
        if self._shared.settings.metrics_port is None:
            router.add_api_route("/metrics", self.metrics, methods=get)
        return router

    # ------------------------------------------------------------------ completions

    async def chat_completions(self, body: ChatCompletionRequest, request: Request) -> Response:
        inp = self._input(body, convert.chat_input)
        events = self._core.generate(inp)
        if not body.stream:
            outcome = await self._run(request, _outcome(events))
            return JSONResponse(self._chat_completion(body, outcome).model_dump(mode="json"))
        first = await self._run(request, anext(events))
        chunk = _ChunkIds(self._fingerprint())
        include_usage = bool(body.stream_options and body.stream_options.include_usage)

        def opening() -> BaseModel:
            return ChatCompletionChunk(
                **chunk.head(body.model),
                choices=[ChunkChoice(delta=ChunkDelta(role="assistant", content=""))],
            )

        def delta(text: str) -> BaseModel:
            return ChatCompletionChunk(
                **chunk.head(body.model), choices=[ChunkChoice(delta=ChunkDelta(content=text))]
            )

        def finish(outcome: GenerateOutcome) -> list[BaseModel]:
            last = ChatCompletionLastChunk(
                **chunk.head(body.model),
                choices=[ChunkChoice(delta=ChunkDelta(), finish_reason=outcome.finish_reason.value)],
                **convert.answer_extras(outcome),
            )
            if not include_usage:
                return [last]
            usage = ChatCompletionChunk(**chunk.head(body.model), choices=[], usage=convert.usage(outcome))
            return [last, usage]

        return EventStream(sse(first, events, opening(), delta, finish))

    async def completions(self, body: CompletionRequest, request: Request) -> Response:
        inp = self._input(body, convert.completion_input)
        events = self._core.generate(inp)
        if not body.stream:
            outcome = await self._run(request, _outcome(events))
            return JSONResponse(self._completion(body, outcome).model_dump(mode="json"))
        first = await self._run(request, anext(events))
        chunk = _ChunkIds(self._fingerprint(), prefix="cmpl")
        include_usage = bool(body.stream_options and body.stream_options.include_usage)

        def delta(text: str) -> BaseModel:
            return CompletionChunk(**chunk.head(body.model), choices=[CompletionChoice(text=text)])

        def finish(outcome: GenerateOutcome) -> list[BaseModel]:
            last = CompletionLastChunk(
                **chunk.head(body.model),
                choices=[CompletionChoice(text="", finish_reason=outcome.finish_reason.value)],
                **convert.answer_extras(outcome),
            )
            if not include_usage:
                return [last]
            usage = CompletionChunk(**chunk.head(body.model), choices=[], usage=convert.usage(outcome))
            return [last, usage]

        return EventStream(sse(first, events, None, delta, finish))

    def _input(
        self, body: GenerationFields, make: Callable[[Any, str | None], GenerateInput]
    ) -> GenerateInput:
        try:
            self._core.require_ready()  # before the model's name is read: it may not be loaded yet
            return make(body, self._adapter_for(body.model))
        except (InvalidArgument, Unavailable) as exc:
            raise from_exception(exc) from None

    async def _run(self, request: Request, work: Any) -> Any:
        """The core's work, cancelled if the client leaves; its errors as the gRPC API's statuses."""
        try:
            return await until_disconnect(request, work)
        except Exception as exc:
            raise from_exception(exc) from None

    def _adapter_for(self, model: str) -> str | None:
        """``model`` as the core's adapter: None for the base model (an experiment may pick the
        arm), the name for a loaded adapter; 404 ``model_not_found`` for anything else."""
        if model == self._base_name():
            return None
        if model in self._registry.names():
            return model
        known = [self._base_name(), *self._registry.names()]
        raise ApiError(
            404,
            "not_found_error",
            f"model {model!r} does not exist; the models are {known} (GET /v1/models)",
            code="model_not_found",
            param="model",
        )

    def _base_name(self) -> str:
        return self._core.engine.model_info.name

    def _fingerprint(self) -> str:
        return self._core.engine.model_info.fingerprint

    def _chat_completion(self, body: ChatCompletionRequest, outcome: GenerateOutcome) -> ChatCompletion:
        return ChatCompletion(
            id=f"chatcmpl-{outcome.request_id}",
            model=body.model,
            choices=[
                ChatChoice(
                    message=ChatMessageOut(content=outcome.text), finish_reason=outcome.finish_reason.value
                )
            ],
            usage=convert.usage(outcome),
            system_fingerprint=self._fingerprint(),
            **convert.answer_extras(outcome),
        )

    def _completion(self, body: CompletionRequest, outcome: GenerateOutcome) -> Completion:
        return Completion(
            id=f"cmpl-{outcome.request_id}",
            model=body.model,
            choices=[CompletionChoice(text=outcome.text, finish_reason=outcome.finish_reason.value)],
            usage=convert.usage(outcome),
            system_fingerprint=self._fingerprint(),
            **convert.answer_extras(outcome),
        )

    # ------------------------------------------------------------------ models

    async def models(self) -> ModelList:
        return ModelList(data=self._cards())

    async def model(self, model_id: str) -> ModelCard:
        for card in self._cards():
            if card.id == model_id:
                return card
        self._adapter_for(model_id)  # raises model_not_found, naming the models
        raise AssertionError("unreachable")

    def _cards(self) -> list[ModelCard]:
        try:
            info = self._shared.server_info()
        except Exception as exc:  # the model is still loading: 503, as every other route
            raise from_exception(exc) from None
        base = info.model
        defaults = _defaults(info)
        cards = [
            ModelCard(
                id=base,
                created=self._started,
                root=base,
                max_model_len=info.max_context_tokens,
                defaults=defaults,
            )
        ]
        for adapter in self._registry.infos():
            card = ModelCard(
                id=adapter.name,
                created=int(adapter.last_used_unix) or self._started,
                root=adapter.path,
                parent=base,
                max_model_len=info.max_context_tokens,
                defaults=defaults,
            )
            cards.append(card)
        return cards

    # ------------------------------------------------------------------ admin

    def require_admin(self, authorization: Annotated[str | None, Header()] = None) -> None:
        """401 unless the admin token (when one is configured) comes as ``Authorization: Bearer``."""
        if self._token is not None and not bearer_matches(authorization, self._token.get_secret_value()):
            raise ApiError(
                401,
                "authentication_error",
                "an admin call: send the header 'Authorization: Bearer <admin token>'",
                code="unauthenticated",
            )

    async def load_lora_adapter(self, body: LoadLoraRequest) -> PlainTextResponse:
        """vLLM's call and answer; the registry's LoadAdapter (validated, pinned when asked)."""
        if not body.lora_name or not body.lora_path:
            raise ApiError.for_code(_INVALID, "lora_name and lora_path are both required")
        try:
            await self._registry.load(body.lora_name, body.lora_path, replace=body.load_inplace, pin=body.pin)
        except Exception as exc:
            raise from_exception(exc) from None
        return PlainTextResponse(f"Success: LoRA adapter '{body.lora_name}' added successfully.")

    async def unload_lora_adapter(self, body: UnloadLoraRequest) -> PlainTextResponse:
        """vLLM's call and answer; requests using the adapter finish on it first (deferred)."""
        if not body.lora_name:
            raise ApiError.for_code(_INVALID, "lora_name is required")
        try:
            await self._registry.unload(body.lora_name)
        except Exception as exc:
            raise from_exception(exc) from None
        return PlainTextResponse(f"Success: LoRA adapter '{body.lora_name}' removed successfully.")

    # ------------------------------------------------------------------ operations

    async def health(self) -> JSONResponse:
        serving = self._core.ready and self._core.engine.healthy()
        return JSONResponse(
            Health(status="serving" if serving else "not_serving").model_dump(),
            status_code=200 if serving else 503,
        )

    async def metrics(self) -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


class _ChunkIds:
    """One stream's id and creation time, repeated on every chunk (OpenAI's clients expect both).

    The id is the stream's own: the core names its request (``request_id``, in the last chunk)
    only at the end, and a caller-chosen request id would cost a uniqueness lookup per request.
    """

    def __init__(self, fingerprint: str, prefix: str = "chatcmpl") -> None:
        self.id = f"{prefix}-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.fingerprint = fingerprint

    def head(self, model: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "created": self.created,
            "model": model,
            "system_fingerprint": self.fingerprint,
        }


def _defaults(info: pb.ServerInfo) -> dict[str, Any]:
    """The sampling a request gets for each field it leaves out, from GetServerInfo's default_*."""
    out: dict[str, Any] = {}
    for field in info.DESCRIPTOR.fields:
        value = getattr(info, field.name)
        if isinstance(value, float):  # proto floats are 32-bit: 0.7 reads back as 0.699999988
            value = float(f"{value:.6g}")
        if field.name.startswith("default_"):
            out[field.name.removeprefix("default_")] = value
        elif field.name.endswith("defaults_source"):
            out["source"] = value
    return out


_INVALID = grpc.StatusCode.INVALID_ARGUMENT
