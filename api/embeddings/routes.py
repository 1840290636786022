"""POST /v1/embeddings: one embedding job for all inputs; workers micro-batch across requests."""

from __future__ import annotations

import time

from flask import Blueprint, jsonify

from api.embeddings.protocol import EmbeddingRequest, embeddings_body
from api.errors import bad_request
from api.job_responses import wait_for_result
from api.jobs_routes import accepted
from api.services import json_body, services, submit_request
from contracts.jobs import DEFAULT_DEVICE, EMBED_TASK, JobKind
from contracts.model_directory import EMBEDDING

bp = Blueprint("embeddings", __name__)


@bp.post("/v1/embeddings")
def create_embeddings():
    request = EmbeddingRequest.model_validate(json_body())
    ctx = services()
    limit = ctx.settings.max_embedding_inputs
    if len(request.inputs) > limit:
        raise bad_request(f"Too many inputs: {len(request.inputs)}; at most {limit} per request.", "input")
    request.model = ctx.require_model(request.model, kind=EMBEDDING)
    job_id, feed = submit_request(EMBED_TASK, JobKind.EMBEDDING, request.model, request.to_job, DEFAULT_DEVICE)
    if feed is None:
        return accepted(job_id)
    result = wait_for_result(feed, time.monotonic() + ctx.settings.sync_timeout_s)
    return jsonify(embeddings_body(request.model, result, request.encoding_format))
