"""Undecodable request bodies get INVALID_ARGUMENT, not UNKNOWN "Unexpected DecodeError".

gRPC parses a request with the method's deserializer before any servicer code runs, and a
parse failure there reaches the client as UNKNOWN: a status that says "server bug" for what is
the caller's bad input. This interceptor registers every method with an identity deserializer
and parses the bytes itself, so a malformed body is a clear INVALID_ARGUMENT from one place.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from hybrid_assistant.server.errors import bound_message


async def _parse(
    parse: Callable[[bytes], Any], raw: bytes, context: grpc.aio.ServicerContext, method: str
) -> Any:
    try:
        return parse(raw)
    except Exception as exc:  # protobuf raises DecodeError, but also ValueError/RuntimeError on some inputs
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            bound_message(f"the request body for {method} is not a valid message ({len(raw)} bytes): {exc}"),
        )


async def _stream(result: Any) -> AsyncIterator[Any]:
    """A streaming behaviour is an async generator, or a coroutine that writes with context.write
    (the admin-token rejection is one): accept both."""
    if inspect.isawaitable(result):
        await result
        return
    async for item in result:
        yield item


def _guard(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    # grpc-stubs types behaviours as synchronous; on a grpc.aio server they are coroutines.
    parse: Any = handler.request_deserializer
    kwargs = {"request_deserializer": None, "response_serializer": handler.response_serializer}

    async def requests(
        raw_iterator: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        async for raw in raw_iterator:
            yield await _parse(parse, raw, context, method)

    if handler.unary_unary is not None:
        inner_uu: Any = handler.unary_unary

        async def unary_unary(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
            return await inner_uu(await _parse(parse, raw, context, method), context)

        return grpc.unary_unary_rpc_method_handler(unary_unary, **kwargs)
    if handler.unary_stream is not None:
        inner_us: Any = handler.unary_stream

        async def unary_stream(raw: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async for item in _stream(inner_us(await _parse(parse, raw, context, method), context)):
                yield item

        return grpc.unary_stream_rpc_method_handler(unary_stream, **kwargs)
    if handler.stream_unary is not None:
        inner_su: Any = handler.stream_unary

        async def stream_unary(raw_iterator: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> Any:
            return await inner_su(requests(raw_iterator, context), context)

        return grpc.stream_unary_rpc_method_handler(stream_unary, **kwargs)
    inner_ss: Any = handler.stream_stream

    async def stream_stream(
        raw_iterator: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        async for item in _stream(inner_ss(requests(raw_iterator, context), context)):
            yield item

    return grpc.stream_stream_rpc_method_handler(stream_stream, **kwargs)


class DecodeGuardInterceptor(grpc.aio.ServerInterceptor):
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        return _guard(handler, handler_call_details.method)
