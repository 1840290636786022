"""POST /v1/embeddings: one embedding job for all inputs; requests arriving together share a task
and workers run their texts in one call."""

from __future__ import annotations

from flask import Blueprint, g

from api.embeddings.protocol import EmbeddingRequest, embeddings_body
from api.errors import bad_request
from api.fast_json import json_response
from api.openapi import documented
from api.queue.responses import accepted, wait_for_result
from api.services import AsyncPreference, json_body, new_request_job_id, prefers_async, services
from contracts.model_directory import EMBEDDING
from contracts.queues import DEFAULT_DEVICE

bp = Blueprint("embeddings", __name__)


@bp.post("/v1/embeddings")
@documented(body=EmbeddingRequest, headers=AsyncPreference)
def create_embeddings():
    """Embeddings of one or more texts."""
    return serve_embeddings(EmbeddingRequest.model_validate(json_body()))


def serve_embeddings(request: EmbeddingRequest):
    """Run a validated embeddings request (any dialect's): the response, or 202."""
    ctx = services()
    limit = ctx.settings.max_embedding_inputs
    if len(request.inputs) > limit:
        raise bad_request(f"Too many inputs: {len(request.inputs)}; at most {limit} per request.", "input")
    request.model = ctx.require_model(request.model, kind=EMBEDDING)
    job_id = new_request_job_id()
    feed = ctx.embeddings.submit(
        request.to_job(job_id), DEFAULT_DEVICE, follow=not prefers_async(), owner=g.get("api_key_id")
    )
    if feed is None:
        return accepted(ctx.store, job_id)
    result = wait_for_result(feed, ctx.settings.sync_timeout_s)
    return json_response(embeddings_body(request.model, result, request.encoding_format))
