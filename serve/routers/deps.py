"""What the routers share: auth, the service lookup, cancellation on disconnect, and SSE responses."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Coroutine
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from starlette.responses import Response, StreamingResponse

from orpo_deploy.serve.auth import check_key
from orpo_deploy.serve.errors import ClientDisconnected, EngineDead, EngineNotReady, ShuttingDown, stream_error_events
from orpo_deploy.serve.logs import request_id_var
from orpo_deploy.serve.protocol import ErrorResponse
from orpo_deploy.serve.service import GenerationService

logger = logging.getLogger(__name__)

T = TypeVar("T")

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 429, 500, 503)
}

_bearer = HTTPBearer(auto_error=False, description="One of the server's API keys.")


def check_api_key(request: Request, credentials: HTTPAuthorizationCredentials | None) -> None:
    """The route-level check (``serve.auth.AuthMiddleware`` has already refused bad keys before the body was read;
    this keeps the rule in force for an app mounted without it, and documents Bearer auth in the OpenAPI schema)."""
    header = f"Bearer {credentials.credentials}" if credentials is not None else None
    check_key(request.app.state.serve.config, request.url.path, header)


BearerCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


async def require_api_key(request: Request, credentials: BearerCredentials) -> None:
    check_api_key(request, credentials)


def get_service(request: Request) -> GenerationService:
    state = request.app.state.serve
    if state.service is not None and state.fatal is not None:
        raise EngineDead("the inference engine died; this server is restarting, retry on another replica")
    if state.gate.draining:
        raise ShuttingDown("server is shutting down; retry on another replica")
    if state.service is None:
        raise EngineNotReady("the model is still loading; retry shortly" if state.fatal is None else "engine failed")
    return state.service


def current_request_id() -> str:
    return request_id_var.get() or "unknown"


async def run_cancellable(request: Request, work: Coroutine[Any, Any, T]) -> T:
    """Run ``work``, cancelling it if the client disconnects first (the engine request is then aborted).

    Like vLLM's ``with_cancellation``: a watcher task waits on ``receive()`` for ``http.disconnect``. Aborting
    matters because a generation nobody will read still holds a concurrency slot and KV-cache blocks, and a
    client that times out and retries would otherwise double the load. It is unsafe when (a) the handler still
    has to read the request body, since the watcher consumes ``receive()`` messages (FastAPI has parsed the
    body before the endpoint runs, so here it is only ever waiting for the disconnect), and (b) ``work`` makes
    changes that must not stop half-way, since cancellation lands at any ``await``; here ``work`` only
    tokenizes and waits on the engine, whose clean-up (abort, slot release) runs in ``finally`` blocks.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_for_disconnect(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if task.done():
        return task.result()
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    raise ClientDisconnected("client closed the connection before the response was ready")


async def _wait_for_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def sse_events(chunks: AsyncIterator[BaseModel]) -> AsyncIterator[str]:
    """``data: <json>`` events and the final ``data: [DONE]``; an error mid-stream is sent as an event."""
    try:
        async for chunk in chunks:
            yield f"data: {chunk.model_dump_json()}\n\n"
        yield "data: [DONE]\n\n"
    except Exception as exc:  # ServeError or not: the status is sent already, so it becomes an event
        logger.warning("error during stream: %s: %s", type(exc).__name__, exc)
        yield stream_error_events(exc)
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]


class StreamStalled(Exception):
    """A streaming client stopped reading: its writes waited longer than the write deadline."""


class EventStreamResponse(StreamingResponse):
    """SSE response that closes its iterator however the response ends, so a client that left mid-stream
    releases its slot and engine request now rather than whenever the generator is garbage-collected.

    Every write has a deadline: a client that keeps its connection open but reads nothing fills the socket
    buffers, and without one its generation would hold a slot and KV cache for as long as it likes.
    """

    media_type = "text/event-stream"

    def __init__(self, chunks: AsyncIterator[BaseModel], write_timeout: float = 30.0) -> None:
        super().__init__(sse_events(chunks), headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.write_timeout = write_timeout

    async def __call__(self, scope, receive, send) -> None:
        async def send_with_deadline(message) -> None:
            try:
                await asyncio.wait_for(send(message), self.write_timeout)
            except TimeoutError:
                raise StreamStalled(f"client read nothing for {self.write_timeout:g} s") from None

        try:
            await super().__call__(scope, receive, send_with_deadline)
        except StreamStalled as exc:  # the generation is aborted below; the connection is closed by the server
            logger.warning("dropping a streaming client: %s", exc)
        except BaseExceptionGroup as group:  # starlette runs the writer in a task group
            stalled, rest = group.split(StreamStalled)
            if rest is not None:
                raise rest from None
            logger.warning("dropping a streaming client: %s", stalled.exceptions[0])
        finally:
            await self.body_iterator.aclose()  # type: ignore[attr-defined]


def json_response(model: BaseModel, status_code: int = 200) -> Response:
    return Response(model.model_dump_json(), status_code=status_code, media_type="application/json")
