"""POST /v1/completions: one job for all prompts, answered sync, streamed or async."""

from __future__ import annotations

import time

from flask import Blueprint, jsonify

from api.completions.protocol import CompletionRequest
from api.completions.render import chunk_frames, completion_body
from api.openapi import documented
from api.queue.devices import device_for_request
from api.queue.responses import accepted, stream_job, wait_for_result
from api.services import AsyncPreference, json_body, services, submit_request
from contracts.jobs import JobKind
from contracts.queues import GENERATE_TASK

bp = Blueprint("completions", __name__)


@bp.post("/v1/completions")
@documented(body=CompletionRequest, headers=AsyncPreference)
def create_completion():
    """Text completions for one or more prompts, decoded together as one job."""
    return serve_completion(CompletionRequest.model_validate(json_body()))


def serve_completion(request: CompletionRequest):
    """Run a validated completion request (any dialect's): the response, streamed or whole, or 202."""
    ctx = services()
    request.model = ctx.require_model(request.model, request.max_tokens)
    device = device_for_request(request.ep, ctx.jobs)
    job_id, feed = submit_request(GENERATE_TASK, JobKind.COMPLETION, request.model, request.to_job, device)
    if feed is None:
        return accepted(ctx.store, job_id)
    timeout_s = ctx.settings.sync_timeout_s
    prompts, n = request.prompts, request.n
    if request.stream:
        return stream_job(
            feed,
            timeout_s,
            lambda events: chunk_frames(
                events, job_id, request.model, prompts, n, request.echo, request.include_usage, request.logprobs
            ),
        )
    result = wait_for_result(feed, timeout_s, cancel_on_disconnect=True)
    echoed = prompts if request.echo else None
    return jsonify(completion_body(job_id, request.model, int(time.time()), result, echoed, n))
