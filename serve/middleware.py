"""Pure ASGI middleware: request id, body-size limit, one JSON access-log line and the request counter.

Pure ASGI rather than Starlette's BaseHTTPMiddleware, which would buffer and re-wrap streaming responses.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid

from fastapi import HTTPException
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orpo_deploy.serve.errors import PayloadTooLarge, error_response
from orpo_deploy.serve.logs import request_id_var
from orpo_deploy.serve.metrics import ServeMetrics

logger = logging.getLogger("serve.access")

REQUEST_ID_HEADER = "x-request-id"
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def request_id_from(scope: Scope) -> str:
    """The client's X-Request-Id when it is short and plain (it ends up in logs and ids), else a new one."""
    for name, value in scope.get("headers", ()):
        if name == REQUEST_ID_HEADER.encode():
            candidate = value.decode("latin-1")
            if _SAFE_REQUEST_ID.match(candidate):
                return candidate
            break
    return uuid.uuid4().hex


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return -1
    return None


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, metrics: ServeMetrics, max_body_bytes: int, body_timeout: float = 10.0) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(scope)
        token = request_id_var.set(request_id)
        start = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message).append("X-Request-Id", request_id)
            await send(message)

        received, body_done, deadline = 0, False, None

        async def receive_limited() -> Message:
            nonlocal received, body_done, deadline
            if body_done:  # after the body, receive() only waits for a disconnect: no deadline
                return await receive()
            loop = asyncio.get_running_loop()
            deadline = deadline or loop.time() + self.body_timeout
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0))
            except TimeoutError:
                # FastAPI re-raises HTTPException from body reading (anything else becomes a generic 400).
                raise HTTPException(408, f"request body not received within {self.body_timeout:g} s") from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if received > self.max_body_bytes:
                    raise HTTPException(413, f"request body is larger than {self.max_body_bytes} bytes")
            return message

        try:
            length = _content_length(scope)
            if length is not None and not 0 <= length <= self.max_body_bytes:
                err = PayloadTooLarge(f"request body is larger than {self.max_body_bytes} bytes")
                await error_response(err)(scope, receive, send_with_id)
            else:
                await self.app(scope, receive_limited, send_with_id)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.observe_request(route, status)
            logger.info(
                "request",
                extra={
                    "method": scope.get("method"),
                    "route": route,
                    "status": status,
                    "duration_s": round(time.perf_counter() - start, 4),
                },
            )
            request_id_var.reset(token)
