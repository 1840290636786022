"""/v1/jobs/{id}: a job's record, its event stream (replay + Last-Event-ID), and cancel."""

from __future__ import annotations

from flask import Blueprint, jsonify, request
from pydantic import BaseModel, ConfigDict, Field

from api.errors import ApiError
from api.openapi import documented
from api.queue.responses import find_job, job_body
from api.services import services
from api.sse import sse_frame, sse_response
from contracts import fleet_metrics
from contracts.errors import job_cancelled
from contracts.events import ErrorEvent
from contracts.job_store import JobRecord, parse_event_id
from contracts.jobs import JobStatus

bp = Blueprint("jobs", __name__)

# A Redis Stream entry ID, "ms-seq" or "ms", each part below 2**64 as Redis requires.
EVENT_ID = r"^[0-9]{1,19}-[0-9]{1,19}$"


class EventsQuery(BaseModel):
    """Where a replay resumes: after this event ID (the `Last-Event-ID` header, if sent, wins)."""

    model_config = ConfigDict(extra="ignore")

    after: str | None = Field(None, pattern=EVENT_ID)


def _record(job_id: str) -> JobRecord:
    return find_job(services().store, job_id)


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
                job_id, ErrorEvent(error=job_cancelled()), JobStatus.CANCELLED, only_if=JobStatus.QUEUED
            )
            if ended and services().settings.metrics:  # no worker will count this job's end
                fleet_metrics.count_job_end(store.client, record.model, record.kind, JobStatus.CANCELLED.value)
    return jsonify(job_body(_record(job_id)))
