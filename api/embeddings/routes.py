"""POST /v1/embeddings: one embedding job for all inputs; requests arriving together share a task
and workers run their texts in one call."""

from __future__ import annotations

import time

from flask import Blueprint, g

from api.embeddings.protocol import EmbeddingRequest, embeddings_body
from api.errors import bad_request
from api.fast_json import json_response
from api.job_client import new_job_id
from api.job_responses import wait_for_result
from api.jobs_routes import accepted
from api.openapi import documented
from api.services import AsyncPreference, json_body, prefers_async, services
from contracts.jobs import DEFAULT_DEVICE
from contracts.model_directory import EMBEDDING

bp = Blueprint("embeddings", __name__)


@bp.post("/v1/embeddings")
@documented(body=EmbeddingRequest, headers=AsyncPreference)
def create_embeddings():
    """Embeddings of one or more texts."""
    request = EmbeddingRequest.model_validate(json_body())
    ctx = services()
    limit = ctx.settings.max_embedding_inputs
    if len(request.inputs) > limit:
        raise bad_request(f"Too many inputs: {len(request.inputs)}; at most {limit} per request.", "input")
    request.model = ctx.require_model(request.model, kind=EMBEDDING)
    g.request_id = job_id = new_job_id()
    feed = ctx.embeddings.submit(request.to_job(job_id), DEFAULT_DEVICE, follow=not prefers_async())
    if feed is None:
        return accepted(job_id)
    result = wait_for_result(feed, time.monotonic() + ctx.settings.sync_timeout_s)
    return json_response(embeddings_body(request.model, result, request.encoding_format))
