"""POST /v1/chat/completions: validate, submit a chat job, answer sync, streamed or async."""

from __future__ import annotations

import time

from flask import Blueprint, jsonify

from api.chat.protocol import ChatCompletionRequest
from api.chat.render import chunk_frames, completion_body
from api.openapi import documented
from api.queue.devices import device_for_request
from api.queue.responses import accepted, stream_job, wait_for_result
from api.services import AsyncPreference, json_body, services, submit_request
from contracts.jobs import JobKind
from contracts.queues import GENERATE_TASK

bp = Blueprint("chat", __name__)


@bp.post("/v1/chat/completions")
@documented(body=ChatCompletionRequest, headers=AsyncPreference)
def create_chat_completion():
    """A chat completion: answered whole, streamed as SSE, or as a job (`Prefer: respond-async`)."""
    return serve_chat(ChatCompletionRequest.model_validate(json_body()))


def serve_chat(chat: ChatCompletionRequest):
    """Run a validated chat request (any dialect's): the response, streamed or whole, or 202."""
    ctx = services()
    chat.model = ctx.require_model(chat.model, chat.output_limit, limit_param=chat.output_limit_param)
    device = device_for_request(chat.ep, ctx.jobs)
    job_id, feed = submit_request(GENERATE_TASK, JobKind.CHAT, chat.model, chat.to_job, device)
    if feed is None:
        return accepted(ctx.store, job_id)
    timeout_s = ctx.settings.sync_timeout_s
    legacy = chat.legacy_functions
    if chat.stream:
        return stream_job(
            feed,
            timeout_s,
            lambda events: chunk_frames(events, job_id, chat.model, chat.n, chat.include_usage, legacy),
        )
    result = wait_for_result(feed, timeout_s, cancel_on_disconnect=True)
    return jsonify(completion_body(job_id, chat.model, int(time.time()), result, legacy))
