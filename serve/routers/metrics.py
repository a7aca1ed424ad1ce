"""GET /metrics: this server's collectors, then vLLM's ``vllm:*`` ones; behind the API key if configured."""

from __future__ import annotations

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import Response

from orpo_deploy.serve.routers.deps import BearerCredentials, check_api_key

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response)
async def metrics(request: Request, credentials: BearerCredentials) -> Response:
    state = request.app.state.serve
    check_api_key(request, credentials)  # open unless metrics_auth or a metrics key (serve.auth.keys_for)
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
