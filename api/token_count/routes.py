"""Foundry Local's POST /v1/chat/completions/tokenizer/encode/count, as a job on the light lane."""

from __future__ import annotations

import time

from flask import Blueprint, g, jsonify
from pydantic import BaseModel, ConfigDict, Field

from api.chat.protocol import ChatMessage
from api.job_client import new_job_id
from api.job_responses import wait_for_result
from api.openapi import documented
from api.services import json_body, services
from contracts.jobs import COUNT_TOKENS_TASK, DEFAULT_DEVICE, LIGHT_LANE, JobKind, TokenCountJob, TokenCountResult

bp = Blueprint("token_count", __name__)


class TokenCountRequest(BaseModel):
    """Foundry's body; other chat fields are ignored (they do not change the prompt's length)."""

    model_config = ConfigDict(extra="ignore", strict=True)

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)


def count_body(job_id: str, model: str, created: int, result: TokenCountResult) -> dict:
    return {"tokenCount": result.token_count}


@bp.post("/v1/chat/completions/tokenizer/encode/count")
@documented(body=TokenCountRequest)
def count_tokens():
    """The length in tokens of the templated prompt the model would see."""
    request = TokenCountRequest.model_validate(json_body())
    ctx = services()
    request.model = ctx.require_model(request.model)
    g.request_id = job_id = new_job_id()
    messages = [m.model_dump(exclude_none=True) for m in request.messages]
    payload = TokenCountJob(job_id=job_id, model=request.model, messages=messages).model_dump()
    feed = ctx.jobs.submit(
        COUNT_TOKENS_TASK, JobKind.TOKEN_COUNT, request.model, payload, DEFAULT_DEVICE, True, LIGHT_LANE
    )
    result = wait_for_result(feed, time.monotonic() + ctx.settings.sync_timeout_s)
    return jsonify(count_body(job_id, request.model, 0, result))
