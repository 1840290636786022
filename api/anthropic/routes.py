"""POST /v1/messages and /v1/messages/count_tokens: Anthropic's Messages API over chat jobs.

A message is a chat job (the chat request of api/anthropic/protocol.py), answered whole or as
Anthropic's event stream; a token count is a token count job on the light lane. Errors are in
Anthropic's shape on every path under /v1/messages, routed or not.
"""

from __future__ import annotations

from flask import Blueprint, g, jsonify
from pydantic import BaseModel, ConfigDict, Field

from api.anthropic.errors import AnthropicErrorBody, anthropic_error
from api.anthropic.protocol import MessagesInput, MessagesRequest
from api.anthropic.render import message_body, message_frames
from api.anthropic.stream import stream_message
from api.errors import register_dialect
from api.openapi import documented
from api.queue.responses import accepted, wait_for_result
from api.services import json_body, new_request_job_id, services, submit_request
from contracts.jobs import JobKind
from contracts.queues import COUNT_TOKENS_TASK, DEFAULT_DEVICE, GENERATE_TASK, LIGHT_LANE

bp = Blueprint("anthropic", __name__)
register_dialect(bp.name, anthropic_error, "/v1/messages")


class AnthropicHeaders(BaseModel):
    """The header the SDK sends with every request: `anthropic-version` (any value is accepted)."""

    model_config = ConfigDict(populate_by_name=True)

    anthropic_version: str | None = Field(
        None, alias="anthropic-version", json_schema_extra={"examples": ["2023-06-01"]}
    )


class MessageHeaders(AnthropicHeaders):
    """`anthropic-version`, and `Prefer: respond-async` for 202 and the job."""

    Prefer: str | None = Field(None, json_schema_extra={"examples": ["respond-async"]})


class CountTokensRequest(MessagesInput):
    """The conversation, system prompt and tools to count; other fields (`max_tokens`...) are ignored."""


class TokenCount(BaseModel):
    """The length of the prompt the model would see."""

    input_tokens: int


@bp.after_request
def request_id_header(response):
    """Anthropic's `request-id` header (the job's ID, as X-Request-Id)."""
    response.headers.setdefault("request-id", g.get("request_id", ""))
    return response


@bp.post("/v1/messages")
@documented(body=MessagesRequest, headers=MessageHeaders, error=AnthropicErrorBody)
def create_message():
    """A Message: answered whole, streamed as Anthropic's events, or as a job (`Prefer: respond-async`)."""
    request = MessagesRequest.model_validate(json_body())
    chat, thinking = request.to_chat(), request.shows_thinking
    ctx = services()
    chat.model = ctx.require_model(chat.model, chat.max_tokens)
    job_id, feed = submit_request(GENERATE_TASK, JobKind.CHAT, chat.model, chat.to_job, DEFAULT_DEVICE)
    if feed is None:
        return accepted(ctx.store, job_id)
    timeout_s = ctx.settings.sync_timeout_s
    if chat.stream:
        tools_offered = chat.tool_mode is not None
        return stream_message(
            feed,
            timeout_s,
            lambda items: message_frames(items, job_id, chat.model, tools_offered, timeout_s, thinking),
        )
    result = wait_for_result(feed, timeout_s, cancel_on_disconnect=True)
    return jsonify(message_body(job_id, chat.model, result.choices[0], result.usage, thinking))


@bp.post("/v1/messages/count_tokens")
@documented(body=CountTokensRequest, headers=AnthropicHeaders, response=TokenCount, error=AnthropicErrorBody)
def count_tokens():
    """The length in tokens of the prompt the model would see: system, tools and messages, templated."""
    conversation = CountTokensRequest.model_validate(json_body())
    ctx = services()
    model = ctx.require_model(conversation.model)
    job_id = new_request_job_id()
    payload = conversation.count_job(job_id, model).model_dump()
    owner = g.get("api_key_id")
    feed = ctx.jobs.submit(
        COUNT_TOKENS_TASK, JobKind.TOKEN_COUNT, model, payload, DEFAULT_DEVICE, True, LIGHT_LANE, owner=owner
    )
    return jsonify({"input_tokens": wait_for_result(feed, ctx.settings.sync_timeout_s).token_count})
