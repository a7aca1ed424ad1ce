"""POST /v1/chat/completions and POST /v1/completions: validate, run on the service, JSON or SSE."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel
from starlette.responses import Response

from orpo_deploy.serve.protocol import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
)
from orpo_deploy.serve.routers.deps import (
    ERROR_RESPONSES,
    EventStreamResponse,
    current_request_id,
    get_service,
    json_response,
    require_api_key,
    run_cancellable,
)

router = APIRouter(dependencies=[Depends(require_api_key)], tags=["generation"])


async def _respond(
    request: Request,
    stream: bool,
    run_stream: Callable[[str], Awaitable[AsyncIterator[BaseModel]]],
    run_full: Callable[[str], Awaitable[BaseModel]],
) -> Response:
    # Both run under run_cancellable, so a client that hangs up before the first token aborts the engine request.
    request_id = current_request_id()
    if stream:
        timeout = request.app.state.serve.config.stream_write_timeout_seconds
        return EventStreamResponse(await run_cancellable(request, run_stream(request_id)), write_timeout=timeout)
    return json_response(await run_cancellable(request, run_full(request_id)))


@router.post(
    "/v1/chat/completions",
    response_model=None,
    responses={
        200: {
            "model": ChatCompletionResponse,
            "content": {"text/event-stream": {"schema": ChatCompletionChunk.model_json_schema()}},
        },
        **ERROR_RESPONSES,
    },
)
async def create_chat_completion(body: ChatCompletionRequest, request: Request) -> Response:
    service = get_service(request)
    return await _respond(
        request, body.stream, lambda rid: service.chat_stream(body, rid), lambda rid: service.chat(body, rid)
    )


@router.post("/v1/completions", response_model=None, responses={200: {"model": CompletionResponse}, **ERROR_RESPONSES})
async def create_completion(body: CompletionRequest, request: Request) -> Response:
    service = get_service(request)
    return await _respond(
        request, body.stream, lambda rid: service.complete_stream(body, rid), lambda rid: service.complete(body, rid)
    )
