"""Typed errors, the one table that maps them to HTTP statuses, and the one writer of the OpenAI error envelope.

Code raises a ``ServeError`` subclass; ``install_error_handlers`` turns it (and FastAPI's validation errors, bad
JSON, unknown routes, wrong methods and unexpected exceptions) into ``{"error": {"message", "type", "param",
"code"}}``. An error after a stream has started cannot change the status any more: ``stream_error_events``
sends it as one ``data:`` event followed by ``data: [DONE]``.
"""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger(__name__)


class ServeError(Exception):
    """Base of every error this server reports to clients."""

    type = "invalid_request_error"
    code: str | None = None

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def headers(self) -> dict[str, str]:
        return {}


class InvalidRequest(ServeError):
    """The request is well-formed JSON but asks for something invalid."""


class ContextLengthExceeded(InvalidRequest):
    code = "context_length_exceeded"


class Unauthorized(ServeError):
    code = "invalid_api_key"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class ModelNotFound(ServeError):
    code = "model_not_found"


class RouteNotFound(ServeError):
    code = "not_found"


class MethodNotAllowed(ServeError):
    code = "method_not_allowed"


class PayloadTooLarge(ServeError):
    code = "payload_too_large"


class RequestTimeout(ServeError):
    """The request body did not arrive in time."""

    code = "request_timeout"


class Overloaded(ServeError):
    """The concurrency slots and the wait queue are full."""

    type = "rate_limit_error"
    code = "server_overloaded"

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class ClientDisconnected(ServeError):
    """The client went away before the response was ready (nginx's 499; nobody reads the body)."""

    code = "client_closed_request"


class ShuttingDown(ServeError):
    type = "server_error"
    code = "shutting_down"


class EngineNotReady(ServeError):
    type = "server_error"
    code = "engine_not_ready"


class EngineFailure(ServeError):
    type = "server_error"
    code = "engine_error"


class EngineDead(EngineFailure):
    """The engine process is gone: this server answers 503 until its supervisor restarts it (it exits 1)."""

    code = "engine_dead"


STATUS_CODES: dict[type[ServeError], int] = {
    InvalidRequest: 400,
    Unauthorized: 401,
    ModelNotFound: 404,
    RouteNotFound: 404,
    MethodNotAllowed: 405,
    RequestTimeout: 408,
    PayloadTooLarge: 413,
    Overloaded: 429,
    ClientDisconnected: 499,
    EngineDead: 503,
    EngineFailure: 500,
    ShuttingDown: 503,
    EngineNotReady: 503,
}


def status_code(exc: ServeError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS_CODES:
            return STATUS_CODES[cls]
    return 500


def envelope(exc: ServeError) -> dict:
    return {"error": {"message": exc.message, "type": exc.type, "param": exc.param, "code": exc.code}}


def error_response(exc: ServeError) -> JSONResponse:
    return JSONResponse(envelope(exc), status_code=status_code(exc), headers=exc.headers())


def stream_error_events(exc: BaseException) -> str:
    """The SSE tail for an error after the stream started: the envelope as a ``data:`` event, then [DONE]."""
    err = exc if isinstance(exc, ServeError) else EngineFailure("internal error while generating")
    return f"data: {json.dumps(envelope(err))}\n\ndata: [DONE]\n\n"


def _param_from_loc(loc: tuple) -> str | None:
    parts = [p for p in loc if p not in ("body", "query", "path", "header")]
    # pydantic puts the union member's tag in the path (``str``, ``list[int]``, ``json_schema``): drop it.
    parts = [p for p in parts if not (isinstance(p, str) and ("[" in p or p in ("str", "int", "function-after")))]
    if not parts:
        return None
    text = str(parts[0])
    for p in parts[1:]:
        text += f"[{p}]" if isinstance(p, int) else f".{p}"
    return text


def validation_error(exc: RequestValidationError) -> InvalidRequest:
    errors = exc.errors()
    if not errors:
        return InvalidRequest("invalid request")
    first = errors[0]
    if first.get("type") == "json_invalid":
        return InvalidRequest(f"request body is not valid JSON: {first.get('msg', '')}", code="invalid_json")
    param = _param_from_loc(tuple(first.get("loc", ())))
    if param is None and first.get("type") in ("missing", "model_attributes_type", "dict_type"):
        return InvalidRequest(
            "the body must be a JSON object sent with 'Content-Type: application/json'", code="invalid_body"
        )
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return InvalidRequest(f"{param or 'body'}: {first.get('msg', 'invalid value')}{more}", param=param)


def install_error_handlers(app: FastAPI) -> None:
    async def on_serve_error(request: Request, exc: ServeError) -> JSONResponse:
        return error_response(exc)

    async def on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(validation_error(exc))

    async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return error_response(RouteNotFound(f"no route {request.method} {request.url.path}"))
        if exc.status_code == 408:
            return error_response(RequestTimeout(str(exc.detail)))
        if exc.status_code == 413:
            return error_response(PayloadTooLarge(str(exc.detail)))
        if exc.status_code == 405:
            return error_response(MethodNotAllowed(f"method {request.method} not allowed on {request.url.path}"))
        err = ServeError(str(exc.detail), code=str(exc.status_code))
        return JSONResponse(envelope(err), status_code=exc.status_code)

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.error("unhandled error: %s: %s", type(exc).__name__, exc, exc_info=exc)
        return error_response(EngineFailure("internal server error"))

    app.add_exception_handler(ServeError, on_serve_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
