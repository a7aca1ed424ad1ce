"""GET /openapi.json, behind the API key like every route but /health and /ready (FastAPI's is open)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from orpo_deploy.serve.routers.deps import require_api_key

router = APIRouter(dependencies=[Depends(require_api_key)])


@router.get("/openapi.json", include_in_schema=False)
async def openapi(request: Request) -> dict:
    return request.app.openapi()
