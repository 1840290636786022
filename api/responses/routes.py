"""/v1/responses: create (whole or streamed), retrieve, delete, list input items, count input tokens.

A response runs as a chat job (api/responses/runner.py); its ID is `resp_<job ID>`. With
`background: true` the request returns at once (status queued): poll it with GET, stream it with
`GET ?stream=true&starting_after=N`, cancel it with POST .../cancel. Tool types Ladle
does not run (web_search, file_search, mcp, ...) never fail a request: they are left out of the
prompt and named, comma-separated, in the response header `X-Ladle-Tools-Left-Out`.
"""

from __future__ import annotations

from typing import TypeVar

from flask import Blueprint, jsonify, make_response
from pydantic import BaseModel, ValidationError

from api.errors import bad_request
from api.openapi import documented
from api.request_logging import tag_request
from api.responses import runner
from api.responses.convert import chat_messages, input_items
from api.responses.protocol import (
    InputItemsQuery,
    InputTokensRequest,
    ResponseRequest,
    RetrieveQuery,
    invalid_body,
)
from api.responses.render import items_page, response_object
from api.responses.store import StoredResponse, install, responses
from api.services import json_body, new_request_job_id, query_args, services

bp = Blueprint("responses", __name__)
bp.record_once(lambda state: install(state.app))

# The response header naming the request's tool types that were left out of the prompt.
LEFT_OUT_HEADER = "X-Ladle-Tools-Left-Out"


Body = TypeVar("Body", bound=BaseModel)


def _parsed(model: type[Body]) -> Body:
    """The request body validated by `model`; otherwise a 400 naming the parameter (or every unknown one)."""
    try:
        return model.model_validate(json_body())
    except ValidationError as error:
        raise invalid_body(error) from None


@bp.post("/v1/responses")
@documented(body=ResponseRequest)
def create_response():
    """A model response (OpenAI's Responses API), whole or streamed as OpenAI's events."""
    request = _parsed(ResponseRequest)
    run = runner.start(request)
    if request.stream:
        response = make_response(run.stream())
    else:
        response = make_response(jsonify(run.queued() if request.background else run.answer()))
    if run.stored.left_out:
        response.headers[LEFT_OUT_HEADER] = ",".join(run.stored.left_out)
    return response


@bp.post("/v1/responses/input_tokens")
@documented(body=InputTokensRequest)
def count_input_tokens():
    """How many tokens the request's input would take, function tools included."""
    request = _parsed(InputTokensRequest)
    model = services().require_model(request.model)
    prior = runner.previous_context(request.previous_response_id) if request.previous_response_id else []
    messages = chat_messages(request.instructions, prior + input_items(request.input or [], "count"))
    if not messages:
        raise bad_request("The input holds nothing to count: send a message.", "input", "invalid_value")
    tokens = runner.count_tokens(model, messages, request.offered_tools, request.reasoning_effort, new_request_job_id())
    return jsonify({"object": "response.input_tokens", "input_tokens": tokens})


@bp.get("/v1/responses/<response_id>")
@documented(query=RetrieveQuery)
def get_response(response_id: str):
    """A stored response as it stands (queued, in progress, or how it ended); a background one may
    be streamed (`stream=true`), resuming after the event numbered `starting_after`."""
    query = query_args(RetrieveQuery)
    stored, outcome = runner.settled(_visible(response_id))
    if query.stream == "true":
        if not stored.fields.get("background"):
            raise bad_request(
                "Only responses created with background=true can be streamed back.", "stream", "invalid_value"
            )
        return runner.replay(stored, -1 if query.starting_after is None else query.starting_after)
    return jsonify(response_object(stored, outcome))


@bp.delete("/v1/responses/<response_id>")
def delete_response(response_id: str):
    """Forget a stored response (a continuation naming it is then a 404)."""
    stored = _visible(response_id)
    responses().delete(stored.id)
    return jsonify({"id": stored.id, "object": "response.deleted", "deleted": True})


@bp.post("/v1/responses/<response_id>/cancel")
def cancel_response(response_id: str):
    """Cancel a background response (any other is a 400, as OpenAI answers)."""
    return jsonify(runner.cancel(_visible(response_id)))


@bp.get("/v1/responses/<response_id>/input_items")
@documented(query=InputItemsQuery)
def list_input_items(response_id: str):
    """The items the response was given (those of the responses it continues first), a page at a time."""
    query = query_args(InputItemsQuery)
    stored = _visible(response_id)
    if stored.context_dropped:
        raise bad_request(
            f"The input items of response '{stored.id}' were too large to store.", "response_id", "input_too_large"
        )
    return jsonify(items_page(stored.context, query.after, query.limit, query.order))


def _visible(response_id: str) -> StoredResponse:
    stored = runner.visible_response(response_id)
    tag_request(stored.job_id)
    return stored
