"""POST /v1/feedback (a rating, a better answer, or the best of n choices for a recorded completion) and
DELETE /v1/records (everything recorded with the caller's key). Present only when the server records (--record)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from orpo_deploy.serve.errors import InvalidRequest, RouteNotFound
from orpo_deploy.serve.logs import api_key_hash_var
from orpo_deploy.serve.protocol import FeedbackRequest, FeedbackResponse
from orpo_deploy.serve.routers.deps import ERROR_RESPONSES, json_response, require_api_key

router = APIRouter(dependencies=[Depends(require_api_key)], tags=["feedback"])


class CompletionNotFound(RouteNotFound):
    code = "completion_not_found"


def _store(request: Request):
    store = request.app.state.serve.records
    if store is None:
        raise RouteNotFound("this server does not record completions (start it with --record)")
    return store


@router.post("/v1/feedback", response_model=FeedbackResponse, responses=ERROR_RESPONSES)
async def post_feedback(body: FeedbackRequest, request: Request) -> Response:
    store = _store(request)
    given = [name for name in ("rating", "preferred", "choice") if getattr(body, name) is not None]
    if given == ["rating", "choice"]:  # one choice rated
        given = ["rating"]
    elif len(given) != 1:
        message = "give exactly one of rating, preferred, choice (or rating with the choice it rates)"
        raise InvalidRequest(message, param="rating" if not given else given[1])
    key_hash = api_key_hash_var.get()
    # a completion rated at once may still be in the writer's queue: wait for its commit, then look
    await asyncio.to_thread(store.wait_written, body.completion_id)
    found = await asyncio.to_thread(store.find, body.completion_id, key_hash)
    if found is None:
        raise CompletionNotFound(f"no recorded completion {body.completion_id!r} for this key", param="completion_id")
    values: dict = {}
    if body.choice is not None:
        if body.choice >= len(found["choices"]):
            raise InvalidRequest(f"the completion has {len(found['choices'])} choices", param="choice")
        values["choice"] = body.choice
    if body.rating is not None:
        values["rating"] = {"up": 1.0, "down": -1.0}.get(body.rating, body.rating)
    elif body.preferred is not None:
        values["preferred"] = body.preferred
    feedback_id = await asyncio.to_thread(store.add_feedback, found["id"], key_hash, given[0], **values)
    return json_response(FeedbackResponse(id=feedback_id, completion_id=body.completion_id))


@router.delete("/v1/records", responses=ERROR_RESPONSES)
async def delete_records(request: Request) -> dict:
    """Delete every completion, and its feedback, recorded with the caller's key."""
    store = _store(request)
    deleted = await asyncio.to_thread(store.delete_by_key, api_key_hash_var.get())
    return {"object": "records.deleted", "deleted": deleted}
