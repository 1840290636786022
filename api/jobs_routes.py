"""/v1/jobs/{id}: a job's record, its event stream (replay + Last-Event-ID), and cancel."""

from __future__ import annotations

from flask import Blueprint, g, jsonify, request, url_for

from api import token_count_routes
from api.chat import serving as chat_serving
from api.completions import serving as completion_serving
from api.embeddings import protocol as embedding_protocol
from api.errors import ApiError
from api.services import services
from api.sse import sse_frame, sse_response
from contracts import fleet_metrics
from contracts.job_store import JobRecord
from contracts.jobs import (
    DownloadResult,
    EmbeddingResult,
    ErrorEvent,
    GenerationResult,
    JobKind,
    JobStatus,
    TokenCountResult,
    cancelled_error,
)

bp = Blueprint("jobs", __name__)

# How a finished job's result is shown, by job kind: in the shape its endpoint returns.
RESULT_RENDERERS = {
    JobKind.CHAT.value: (GenerationResult, chat_serving.completion_body),
    JobKind.COMPLETION.value: (GenerationResult, completion_serving.completion_body),
    JobKind.EMBEDDING.value: (EmbeddingResult, embedding_protocol.job_result_body),
    JobKind.TOKEN_COUNT.value: (TokenCountResult, token_count_routes.count_body),
    JobKind.DOWNLOAD.value: (DownloadResult, lambda _id, _model, _created, result: result.model_dump()),
}


def job_body(record: JobRecord) -> dict:
    """A job as clients see it: status, timestamps, worker, and the result in its API's shape."""
    result = record.result
    if result is not None and record.kind in RESULT_RENDERERS:
        shape, render = RESULT_RENDERERS[record.kind]
        result = render(record.job_id, record.model, int(record.created_at), shape(**result))
    error = {k: v for k, v in record.error.items() if k != "status"} if record.error else None
    batch_size = record.result.get("batch_size") if record.result else None
    return {
        "id": record.job_id,
        "object": "job",
        "kind": record.kind,
        "model": record.model,
        "status": record.status.value,
        "created_at": record.created_at,
        "started_at": record.started_at,
        "finished_at": record.finished_at,
        "worker": record.worker,
        "result": result,
        "error": error,
        # How many sequences (generation) or texts (embeddings) ran together with this job's.
        "batch_size": batch_size,
        # Long jobs (downloads): bytes done and total, per file and overall.
        "progress": record.progress,
    }


def accepted(job_id: str):
    """202 for a job submitted with `Prefer: respond-async`."""
    headers = {"Location": url_for("jobs.get_job", job_id=job_id), "Preference-Applied": "respond-async"}
    return jsonify(job_body(_record(job_id))), 202, headers


def _record(job_id: str) -> JobRecord:
    g.request_id = job_id
    record = services().store.get(job_id)
    if record is None:
        raise ApiError(404, f"No job with ID '{job_id}' (it may have expired).", param="job_id", code="job_not_found")
    return record


@bp.get("/v1/jobs/<job_id>")
def get_job(job_id: str):
    return jsonify(job_body(_record(job_id)))


@bp.get("/v1/jobs/<job_id>/events")
def job_events(job_id: str):
    _record(job_id)
    after = request.headers.get("Last-Event-ID") or request.args.get("after")
    feed = services().jobs.follow(job_id)

    def frames():
        try:
            for stream_id, event in feed.events(after=after):
                yield sse_frame(event.model_dump_json(), event=event.type, event_id=stream_id)
        finally:
            feed.close()

    return sse_response(frames())


@bp.delete("/v1/jobs/<job_id>")
def cancel_job(job_id: str):
    record = _record(job_id)
    store = services().store
    if not record.status.is_terminal:
        store.request_cancel(job_id)
        if record.status == JobStatus.QUEUED:  # a worker that starts it first cancels it at its next step
            ended = store.finish(
                job_id, ErrorEvent(error=cancelled_error()), JobStatus.CANCELLED, only_if=JobStatus.QUEUED
            )
            if ended and services().settings.metrics:  # no worker will count this job's end
                fleet_metrics.count_job_end(store.client, record.model, record.kind, JobStatus.CANCELLED.value)
    return jsonify(job_body(_record(job_id)))
