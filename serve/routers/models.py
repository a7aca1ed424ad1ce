"""GET /v1/models and /v1/models/{model_id}: the served model with its provenance manifest."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from orpo_deploy.serve.errors import ModelNotFound
from orpo_deploy.serve.protocol import ModelCard, ModelList
from orpo_deploy.serve.routers.deps import ERROR_RESPONSES, require_api_key

router = APIRouter(dependencies=[Depends(require_api_key)], tags=["models"])


def _card(request: Request) -> ModelCard:
    state = request.app.state.serve
    max_model_len = state.engine.max_model_len if state.engine is not None else state.config.max_model_len
    return ModelCard(
        id=state.config.model_name,
        created=int(state.started_at),
        max_model_len=max_model_len,
        provenance=state.provenance,
    )


@router.get("/v1/models", response_model=ModelList, responses=ERROR_RESPONSES)
async def list_models(request: Request) -> ModelList:
    return ModelList(data=[_card(request)])


@router.get("/v1/models/{model_id:path}", response_model=ModelCard, responses=ERROR_RESPONSES)
async def get_model(model_id: str, request: Request) -> ModelCard:
    card = _card(request)
    if model_id != card.id:
        raise ModelNotFound(f"model {model_id!r} does not exist", param="model")
    return card
