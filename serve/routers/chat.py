"""POST /v1/chat/completions."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from serve.protocol import ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse
from serve.routers.deps import (
    ERROR_RESPONSES,
    EventStreamResponse,
    current_request_id,
    get_service,
    json_response,
    require_api_key,
    run_cancellable,
)

router = APIRouter(dependencies=[Depends(require_api_key)], tags=["generation"])


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
    request_id = current_request_id()
    if body.stream:
        chunks = await run_cancellable(request, service.chat_stream(body, request_id))
        return EventStreamResponse(chunks)
    return json_response(await run_cancellable(request, service.chat(body, request_id)))
