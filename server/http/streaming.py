"""Server-sent events for streamed completions, and cancelling work when the client goes away.

A generation holds an engine slot until it ends, so a client that leaves must end it, as a
cancelled gRPC call does. Uvicorn does not cancel a request's task when its client disconnects;
it only fails the next write. Both paths here therefore watch the connection for
``http.disconnect`` while they wait and *cancel* the work when it comes: the ``CancelledError``
lands in the engine's ``await``, whose ``finally`` frees the slot within a decode step.

* :func:`until_disconnect` - a unary answer, and a stream's first item (validation, queueing,
  prefill), which must arrive before the response starts so that errors keep their status.
* :class:`EventStream` - the rest of a stream, sent as ``data: {json}`` events (FastAPI's SSE
  encoder) ending with ``data: [DONE]``; Starlette's own disconnect watch only runs for ASGI
  servers older than spec 2.4, which uvicorn is not.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import TypeVar

import anyio
import grpc
from fastapi.sse import format_sse_event
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from hybrid_assistant.server.core_types import GenerateOutcome
from hybrid_assistant.server.http.errors import ApiError, from_exception
from hybrid_assistant.server.http.schemas import ErrorBody

T = TypeVar("T")
DONE = format_sse_event(data_str="[DONE]")


async def _disconnected(receive: Receive) -> None:
    """Return once the client has gone (the body has been read: only disconnect can come)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """``await work``, cancelled (and 499 raised) if the client disconnects first."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_disconnected(request.receive))
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not task.done():  # the client left (or this request was cancelled): stop the work
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if task.cancelled():
        raise ApiError.for_code(grpc.StatusCode.CANCELLED, "the client disconnected")
    return task.result()


def event(model: BaseModel) -> bytes:
    return format_sse_event(data_str=model.model_dump_json())


class EventStream(StreamingResponse):
    """``text/event-stream`` of ``events``; cancelled as soon as the client disconnects."""

    def __init__(self, events: AsyncGenerator[bytes, None]) -> None:
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        super().__init__(events, media_type="text/event-stream", headers=headers)
        self._events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as group:

                async def produce() -> None:
                    with contextlib.suppress(OSError):  # the client left mid-write
                        await self.stream_response(send)
                    group.cancel_scope.cancel()

                group.start_soon(produce)
                await _disconnected(receive)
                group.cancel_scope.cancel()  # the client left: cancel the generation where it waits
        finally:
            await self._events.aclose()


async def sse(
    first: str | GenerateOutcome,
    rest: AsyncIterator[str | GenerateOutcome],
    opening: BaseModel | None,
    delta: Callable[[str], BaseModel],
    finish: Callable[[GenerateOutcome], list[BaseModel]],
) -> AsyncGenerator[bytes, None]:
    """The events of one streamed completion: ``opening`` (if any), a ``delta`` per text piece,
    the ``finish`` events, ``[DONE]``. An error after the first event cannot change the status
    any more: it is sent in-band as ``data: {"error": ...}`` (OpenAI's clients raise it)."""
    if opening is not None:
        yield event(opening)
    item = first
    try:
        while not isinstance(item, GenerateOutcome):
            yield event(delta(item))
            item = await anext(rest)
        async for _ in rest:  # to its end: the core logs the request before the client sees [DONE]
            pass
        for model in finish(item):
            yield event(model)
    except Exception as exc:
        yield event(ErrorBody(error=from_exception(exc).detail))
    yield DONE
