"""POST /v1/completions."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from serve.protocol import CompletionRequest, CompletionResponse
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


@router.post("/v1/completions", response_model=None, responses={200: {"model": CompletionResponse}, **ERROR_RESPONSES})
async def create_completion(body: CompletionRequest, request: Request) -> Response:
    service = get_service(request)
    request_id = current_request_id()
    if body.stream:
        chunks = await run_cancellable(request, service.complete_stream(body, request_id))
        return EventStreamResponse(chunks)
    return json_response(await run_cancellable(request, service.complete(body, request_id)))
