"""POST /v1/chat/completions: validate, submit a chat job, answer sync, streamed or async."""

from __future__ import annotations

import time

from flask import Blueprint, g, jsonify

from api.chat.protocol import ChatCompletionRequest
from api.chat.serving import chunk_frames, completion_body, first_event, timeout_error, wait_for_result
from api.job_client import JobEventFeed, JobTimeout, new_job_id
from api.jobs_routes import accepted
from api.services import json_body, prefers_async, services
from api.sse import sse_response
from contracts.jobs import DEFAULT_DEVICE, GENERATE_TASK, JobKind

bp = Blueprint("chat", __name__)


@bp.post("/v1/chat/completions")
def create_chat_completion():
    chat = ChatCompletionRequest.model_validate(json_body())
    ctx = services()
    ctx.require_model(chat.model, chat.output_limit)
    g.request_id = job_id = new_job_id()
    payload = chat.to_job(job_id).model_dump()
    feed = ctx.jobs.submit(GENERATE_TASK, JobKind.CHAT, chat.model, payload, DEFAULT_DEVICE, not prefers_async())
    if feed is None:
        return accepted(job_id)
    deadline = time.monotonic() + ctx.settings.sync_timeout_s
    if chat.stream:
        return _stream(feed, chat, deadline)
    try:
        result = wait_for_result(feed, deadline, ctx.settings.sync_timeout_s)
    finally:
        feed.close()
    return jsonify(completion_body(job_id, chat.model, int(time.time()), result))


def _stream(feed: JobEventFeed, chat: ChatCompletionRequest, deadline: float):
    ctx = services()
    events = feed.events(deadline=deadline)
    try:
        first_event(events, feed.job_id)
    except JobTimeout:
        feed.close()
        raise timeout_error(feed.job_id, ctx.settings.sync_timeout_s) from None
    except BaseException:
        feed.close()
        raise
    include_usage = bool(chat.stream_options and chat.stream_options.include_usage)

    def frames():
        finished = False
        try:
            yield from chunk_frames(events, feed.job_id, chat.model, chat.n, include_usage)
            finished = True
        finally:
            feed.close()
            if not finished:  # the client went away (or timed out): stop generating for nobody
                ctx.store.request_cancel(feed.job_id)

    return sse_response(frames())
