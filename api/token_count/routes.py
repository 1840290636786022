"""Foundry Local's POST /v1/chat/completions/tokenizer/encode/count, as a job on the light lane."""

from __future__ import annotations

from flask import Blueprint, g, jsonify

from api.openapi import documented
from api.queue.responses import wait_for_result
from api.services import json_body, new_request_job_id, services
from api.token_count.protocol import TokenCountRequest, count_body
from contracts.jobs import JobKind
from contracts.queues import COUNT_TOKENS_TASK, DEFAULT_DEVICE, LIGHT_LANE

bp = Blueprint("token_count", __name__)


@bp.post("/v1/chat/completions/tokenizer/encode/count")
@documented(body=TokenCountRequest)
def count_tokens():
    """The length in tokens of the templated prompt the model would see."""
    request = TokenCountRequest.model_validate(json_body())
    ctx = services()
    request.model = ctx.require_model(request.model)
    job_id = new_request_job_id()
    payload = request.to_job(job_id).model_dump()
    feed = ctx.jobs.submit(
        COUNT_TOKENS_TASK,
        JobKind.TOKEN_COUNT,
        request.model,
        payload,
        DEFAULT_DEVICE,
        True,
        LIGHT_LANE,
        owner=g.get("api_key_id"),
    )
    return jsonify(count_body(wait_for_result(feed, ctx.settings.sync_timeout_s)))
