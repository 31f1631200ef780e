"""OpenAI-shaped errors: ``{"error": {"message", "type", "param", "code"}}`` with the HTTP status
that :data:`hybrid_assistant.server.errors.HTTP_STATUSES` gives the error's gRPC status.

Every failure reaches the client through :class:`ApiError`: the core's errors by
:func:`from_exception` (the one table in ``server.errors``: a 429 here is a RESOURCE_EXHAUSTED on
gRPC), a body that does not validate by :func:`from_validation` (every problem of the body in one
message, through the same :class:`~hybrid_assistant.server.validation.Problems` as the core's
checks), Starlette's own HTTP errors (404 path, 405 method) by the handler for them, and a
body over ``max_message_bytes`` by :class:`BodyLimit`. Unknown exceptions are 500 with a
generic message, logged by ``status_for``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hybrid_assistant.server.errors import InvalidArgument, http_status, status_for
from hybrid_assistant.server.http.schemas import UNSUPPORTED_TYPE, ErrorBody, ErrorDetail
from hybrid_assistant.server.validation import Problems, bounded


class ApiError(Exception):
    """An error answer: HTTP status, OpenAI error type, message; ``param`` names the field at fault."""

    def __init__(
        self, status: int, type_: str, message: str, *, code: str | None = None, param: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.detail = ErrorDetail(message=message, type=type_, param=param, code=code)

    @classmethod
    def for_code(cls, code: grpc.StatusCode, message: str, *, param: str | None = None) -> ApiError:
        status, type_ = http_status(code)
        return cls(status, type_, message, code=code.name.lower(), param=param)

    def response(self) -> JSONResponse:
        return JSONResponse(ErrorBody(error=self.detail).model_dump(), status_code=self.status)


def from_exception(exc: BaseException) -> ApiError:
    """The error the gRPC API would answer for ``exc``, as HTTP."""
    if isinstance(exc, ApiError):
        return exc
    code, message = status_for(exc)
    return ApiError.for_code(code, message)


class _Message:
    """One validation error of a body, formatted as ``where: what`` (the value cut for echoing)."""

    def __init__(self, where: str, what: str) -> None:
        self._text = f"{where}: {what}" if where else what

    def format(self, **values: object) -> str:
        return self._text


def _where(loc: Sequence[Any]) -> str:
    """``("body", "messages", 0, "content")`` -> ``messages[0].content``."""
    text = ""
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _what(error: dict[str, Any], where: str) -> str:
    kind = error.get("type", "")
    if kind == "extra_forbidden":
        return "unknown field (not in the OpenAI API, nor one of this server's extras)"
    if kind == "missing":
        return "required"
    if kind == "json_invalid":
        return f"the body is not valid JSON ({error.get('ctx', {}).get('error', 'parse error')})"
    if not where and kind in ("model_attributes_type", "dict_type", "model_type"):
        return "the body must be a JSON object (and the Content-Type application/json)"
    message = str(error.get("msg", "invalid"))
    if kind != UNSUPPORTED_TYPE and "input" in error and not isinstance(error["input"], dict | list):
        message += f", got {bounded(repr(error['input']))}"
    return message


def _code(errors: Sequence[dict[str, Any]]) -> str:
    kinds = {e.get("type") for e in errors}
    if kinds == {"extra_forbidden"}:
        return "unknown_parameter"
    if kinds == {UNSUPPORTED_TYPE}:
        return UNSUPPORTED_TYPE
    if "json_invalid" in kinds:
        return "invalid_json"
    return "invalid_value"


def from_validation(errors: Sequence[dict[str, Any]]) -> ApiError:
    """400 listing every problem pydantic found in the body; ``param`` is the first field at fault."""
    problems = Problems()
    for error in errors:
        where = "" if error.get("type") == "json_invalid" else _where(error.get("loc", ()))
        problems.add(_Message(where, _what(error, where)))
    try:
        problems.raise_if_any()
    except InvalidArgument as exc:  # Problems' one message: capped and counted like the core's
        message = str(exc)
    else:
        message = "the request body is invalid"
    params = [_where(e.get("loc", ())) for e in errors if e.get("type") != "json_invalid"]
    params = [p for p in params if p]
    return ApiError(
        400, "invalid_request_error", message, code=_code(errors), param=params[0] if params else None
    )


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return exc.response()


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return from_validation(list(exc.errors())).response()


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    type_ = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
    if exc.status_code >= 500:
        type_ = "server_error"
    code = "body_too_large" if exc.status_code == 413 else f"http_{exc.status_code}"
    error = ApiError(exc.status_code, type_, str(exc.detail), code=code)
    response = error.response()
    response.headers.update(exc.headers or {})
    return response


class BodyLimit:
    """413 in OpenAI's shape for a body over ``limit`` bytes: at once when its Content-Length says
    so, else as soon as the bytes read pass it (a chunked body). Starlette's own limit
    (FastAPI's ``max_body_size``) answers in plain text, from outside the exception handlers."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = f"the body is over {self.limit} bytes (max_message_bytes)"
        length = Headers(scope=scope).get("content-length", "")
        if length.isdigit() and int(length) > self.limit:
            error = ApiError(413, "invalid_request_error", too_large, code="body_too_large")
            await error.response()(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:  # FastAPI re-raises an HTTPException from the body read
                    raise HTTPException(413, too_large)
            return message

        await self.app(scope, limited, send)


def install(app: FastAPI, max_body_bytes: int) -> None:
    """Make every error the app answers OpenAI-shaped."""
    app.add_middleware(BodyLimit, limit=max_body_bytes)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
