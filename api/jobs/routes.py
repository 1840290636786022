"""/v1/jobs/{id}: a job's record, its event stream (replay + Last-Event-ID), and cancel."""

from __future__ import annotations

import re

from flask import Blueprint, g, jsonify, request, url_for
from pydantic import BaseModel, ConfigDict, Field

from api import token_count_routes
from api.chat import serving as chat_serving
from api.completions import serving as completion_serving
from api.embeddings import protocol as embedding_protocol
from api.errors import ApiError
from api.openapi import documented
from api.services import services
from api.sse import sse_frame, sse_response
from contracts import fleet_metrics
from contracts.job_store import JobRecord, parse_event_id
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

# What a job ID can look like (ours are uuid4 hex); anything else cannot name a job, and is never
# echoed into a header or used in a Redis key.
JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
# A Redis Stream entry ID, "ms-seq" or "ms", each part below 2**64 as Redis requires.
EVENT_ID = r"^[0-9]{1,19}-[0-9]{1,19}$"


class EventsQuery(BaseModel):
    """Where a replay resumes: after this event ID (the `Last-Event-ID` header, if sent, wins)."""

    model_config = ConfigDict(extra="ignore")

    after: str | None = Field(None, pattern=EVENT_ID)


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
    record = services().store.get(job_id) if JOB_ID.fullmatch(job_id) else None
    if record is None:
        raise ApiError(404, f"No job with ID '{job_id}' (it may have expired).", param="job_id", code="job_not_found")
    g.request_id = job_id
    return record


@bp.get("/v1/jobs/<job_id>")
def get_job(job_id: str):
    """A job's status, timestamps, worker, and result in its endpoint's shape."""
    return jsonify(job_body(_record(job_id)))


@bp.get("/v1/jobs/<job_id>/events")
@documented(query=EventsQuery)
def job_events(job_id: str):
    """The job's events as SSE, replayed from the start or after `Last-Event-ID` / `after`."""
    _record(job_id)
    header = request.headers.get("Last-Event-ID")
    after, param = (header, "Last-Event-ID") if header else (request.args.get("after"), "after")
    if after:
        try:
            parse_event_id(after)
        except ValueError:
            message = f"'{after[:100]}' is not an event ID of this job (IDs look like '1-5')."
            raise ApiError(400, message, param=param, code="invalid_event_id") from None
    feed = services().jobs.follow(job_id)

    def frames():
        try:
            for event_id, event in feed.events(after=after):
                yield sse_frame(event.model_dump_json(), event=event.type, event_id=event_id)
        finally:
            feed.close()

    return sse_response(frames())


@bp.delete("/v1/jobs/<job_id>")
def cancel_job(job_id: str):
    """Cancel a job: a queued one never runs, a running one stops at its next step."""
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
