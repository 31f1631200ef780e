"""Bearer-token check for admin methods: one gRPC server interceptor, and :func:`bearer_matches` for
the HTTP API's admin endpoints (same header, same comparison)."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

_PACKAGE = "/hybrid_assistant.v1."
ADMIN_METHODS = frozenset(
    _PACKAGE + m
    for m in (
        "Adapters/LoadAdapter",
        "Adapters/UnloadAdapter",
        "Knowledge/Ingest",
        "Knowledge/DeleteDocuments",
        "Experiments/CreateExperiment",
        "Experiments/UpdateExperiment",
        "Experiments/ExportRequestLog",
    )
)


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` value ("" for any other scheme or none)."""
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def bearer_matches(authorization: str | None, token: str) -> bool:
    """Whether an Authorization value carries ``token`` (constant-time comparison)."""
    presented = bearer_token(authorization).encode()
    return bool(presented) and hmac.compare_digest(presented, token.encode())


def _authorization(metadata: tuple[tuple[str, str | bytes], ...] | None) -> str:
    for key, value in metadata or ():
        if key.lower() == "authorization":
            return value.decode() if isinstance(value, bytes) else value
    return ""


class AdminTokenInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method not in ADMIN_METHODS:
            return handler
        if bearer_matches(_authorization(handler_call_details.invocation_metadata), self._token):
            return handler
        return _reject(handler, handler_call_details.method)


def _reject(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    message = f"{method} is an admin call: send metadata 'authorization: Bearer <admin token>'"

    async def abort(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    async def abort_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        # A response-streaming method needs an async generator: a plain coroutine there made
        # grpc.aio answer UNKNOWN ("'async for' requires an object with __aiter__") instead.
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        yield  # pragma: no cover - abort raises

    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(abort_stream, **kwargs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(abort, **kwargs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(abort_stream, **kwargs)
    return grpc.unary_unary_rpc_method_handler(abort, **kwargs)
