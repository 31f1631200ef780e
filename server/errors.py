"""Domain errors and the one place that maps every error to a gRPC status (and each status to HTTP).

``ServiceError`` subclasses carry their own code; the exceptions of packages that know nothing
of gRPC (``retrieval.errors``, ``adapters.errors``, ``server.engines.errors``) are mapped in the
one table below. It imports only those error modules, none of which imports ``server``, so
any server module may import this one without a cycle.

Servicer methods are wrapped with :func:`grpc_errors`; streaming handlers catch inside the
generator the same way. Unknown exceptions become INTERNAL with a generic message and are
logged with their traceback, so no internal detail leaks to clients.

The HTTP API (``server.http``) answers with the same status, translated once by
:data:`HTTP_STATUSES`: an error means the same thing whichever transport carried the request.
"""

from __future__ import annotations

import errno
import functools
import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from hybrid_assistant.adapters import errors as adapter_errors
from hybrid_assistant.retrieval import errors as retrieval_errors
from hybrid_assistant.server.engines import errors as engine_errors

log = logging.getLogger(__name__)


class ServiceError(Exception):
    code = grpc.StatusCode.INTERNAL


class InvalidArgument(ServiceError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(ServiceError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ServiceError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(ServiceError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(ServiceError):
    code = grpc.StatusCode.UNAVAILABLE


class ResourceExhausted(ServiceError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


# Errors raised by code that does not know about gRPC (the retrieval and adapters packages, the
# embedded engine's scheduler), mapped here and nowhere else. A subclass takes its first match.
# The vLLM engine translates vLLM's own errors where it catches them: importing vLLM here would
# load it for every server. Every other exception is INTERNAL (see status_for).
_MAPPING: dict[type[BaseException], grpc.StatusCode] = {
    adapter_errors.AdapterNotFoundError: grpc.StatusCode.NOT_FOUND,
    adapter_errors.AdapterValidationError: grpc.StatusCode.INVALID_ARGUMENT,
    adapter_errors.UnsafeAdapterPathError: grpc.StatusCode.INVALID_ARGUMENT,
    retrieval_errors.InvalidQueryError: grpc.StatusCode.INVALID_ARGUMENT,
    retrieval_errors.EmptyIndexError: grpc.StatusCode.FAILED_PRECONDITION,
    retrieval_errors.IndexLockedError: grpc.StatusCode.FAILED_PRECONDITION,
    retrieval_errors.IncompatibleIndexError: grpc.StatusCode.FAILED_PRECONDITION,
    retrieval_errors.CorruptIndexError: grpc.StatusCode.FAILED_PRECONDITION,
    retrieval_errors.EmbedderError: grpc.StatusCode.FAILED_PRECONDITION,
    retrieval_errors.SharedStoreUnavailableError: grpc.StatusCode.UNAVAILABLE,
    engine_errors.QueueFullError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    engine_errors.EngineStoppedError: grpc.StatusCode.UNAVAILABLE,
    # engine_errors.StepFailedError is left INTERNAL: a failed forward step is the server's fault.
}


# gRPC sends the status message as metadata; past the client's metadata limit (16 KB by default)
# the client sees RESOURCE_EXHAUSTED instead of the real error. Messages are cut well below it.
MAX_STATUS_MESSAGE = 4096


def bound_message(message: str) -> str:
    if len(message) <= MAX_STATUS_MESSAGE:
        return message
    return f"{message[:MAX_STATUS_MESSAGE]}... (message cut: {len(message)} characters)"


_NO_SPACE = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


def _storage_status(exc: BaseException) -> tuple[grpc.StatusCode, str] | None:
    """Disk full or failing storage: the caller's write did not happen; say so, do not say "bug"."""
    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc)
        full = "full" in text or "disk I/O" in text  # SQLite reports EFBIG/ENOSPC as either
        code = grpc.StatusCode.RESOURCE_EXHAUSTED if full else grpc.StatusCode.UNAVAILABLE
    elif isinstance(exc, OSError) and exc.errno in _NO_SPACE:
        text, code = exc.strerror or str(exc), grpc.StatusCode.RESOURCE_EXHAUSTED
    else:
        return None
    log.error("storage error: %s", text, exc_info=exc)
    return code, bound_message(
        f"storage error ({text}): the server's disk is full or failing; nothing was written, "
        "retry when space is back"
    )


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    storage = _storage_status(exc)
    if storage is not None:
        return storage
    if isinstance(exc, ServiceError):
        return exc.code, bound_message(str(exc))
    for exc_type, code in _MAPPING.items():
        if isinstance(exc, exc_type):
            return code, bound_message(str(exc))
    log.error("unexpected error", exc_info=exc)
    return grpc.StatusCode.INTERNAL, "internal error (see the server log)"


# gRPC status -> (HTTP status, OpenAI error "type"), for the HTTP API's error bodies
# ({"error": {"message", "type", "param", "code"}}; "code" is the gRPC status name, lower case).
# OpenAI's clients raise by HTTP status (400 BadRequestError, 404 NotFoundError, 429
# RateLimitError, ...), so the HTTP status is what carries the meaning. A status not listed is 500.
HTTP_STATUSES: dict[grpc.StatusCode, tuple[int, str]] = {
    grpc.StatusCode.INVALID_ARGUMENT: (400, "invalid_request_error"),
    grpc.StatusCode.FAILED_PRECONDITION: (400, "invalid_request_error"),
    grpc.StatusCode.OUT_OF_RANGE: (400, "invalid_request_error"),
    grpc.StatusCode.UNAUTHENTICATED: (401, "authentication_error"),
    grpc.StatusCode.PERMISSION_DENIED: (403, "permission_error"),
    grpc.StatusCode.NOT_FOUND: (404, "not_found_error"),
    grpc.StatusCode.ALREADY_EXISTS: (409, "conflict_error"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (429, "rate_limit_error"),
    grpc.StatusCode.CANCELLED: (499, "cancelled_error"),
    grpc.StatusCode.UNIMPLEMENTED: (501, "not_implemented_error"),
    grpc.StatusCode.UNAVAILABLE: (503, "service_unavailable_error"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (504, "timeout_error"),
}
HTTP_INTERNAL = (500, "server_error")


def http_status(code: grpc.StatusCode) -> tuple[int, str]:
    """The HTTP status and OpenAI error type that stand for gRPC status ``code``."""
    return HTTP_STATUSES.get(code, HTTP_INTERNAL)


Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Any]])


def grpc_errors(handler: Handler) -> Handler:
    """Wrap a unary (or stream-unary) servicer method: domain errors become status codes."""

    @functools.wraps(handler)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await handler(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            code, message = status_for(exc)
            await context.abort(code, message)

    return wrapper  # type: ignore[return-value]


def grpc_stream_errors(
    handler: Callable[..., AsyncIterator[Any]],
) -> Callable[..., AsyncIterator[Any]]:
    """Like :func:`grpc_errors`, for server-streaming methods (errors caught inside the generator)."""

    @functools.wraps(handler)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            async for item in handler(self, request, context):
                yield item
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            code, message = status_for(exc)
            await context.abort(code, message)

    return wrapper
