"""GET /health (process alive), /ready (engine loaded and not draining), /version."""

from __future__ import annotations

import importlib.metadata
import platform

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from orpo_deploy.serve.errors import EngineDead, EngineFailure, EngineNotReady, ShuttingDown, envelope, error_response
from orpo_deploy.serve.routers.deps import ERROR_RESPONSES, require_api_key

router = APIRouter(tags=["health"])


@router.get("/health", responses={503: ERROR_RESPONSES[503]})
async def health(request: Request) -> JSONResponse:
    """Alive: 200 while the engine loads, serves or drains; 503 once it failed (restart the process)."""
    state = request.app.state.serve
    try:
        if state.fatal is not None:
            raise EngineFailure(f"engine failed: {state.fatal}")
        if state.engine is not None:
            await state.engine.check_health()
    except EngineFailure as exc:
        return JSONResponse({"status": "unhealthy", **envelope(exc)}, status_code=503)
    status = "draining" if state.gate.draining else "ok" if state.engine is not None else "starting"
    return JSONResponse({"status": status})


@router.get("/ready", responses={503: ERROR_RESPONSES[503]})
async def ready(request: Request) -> JSONResponse:
    """Ready for traffic: 503 while loading, after a failure, and from SIGTERM on."""
    state = request.app.state.serve
    if state.service is not None and state.fatal is not None:
        return error_response(EngineDead("the inference engine died"))
    if state.gate.draining:
        return error_response(ShuttingDown("server is shutting down"))
    if state.service is None:
        return error_response(EngineNotReady("the model is not loaded" + (" (failed)" if state.fatal else "")))
    return JSONResponse({"status": "ready"})


@router.get("/version", dependencies=[Depends(require_api_key)], responses=ERROR_RESPONSES)
async def version(request: Request) -> dict:
    state = request.app.state.serve
    try:
        package = importlib.metadata.version("orpo-deploy")
    except importlib.metadata.PackageNotFoundError:
        package = None
    return {
        "orpo_serve": package,
        "engine": state.engine.version if state.engine is not None else None,
        "python": platform.python_version(),
    }
