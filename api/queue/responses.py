"""Answering a request from its job's events: wait for the result, or stream frames."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from api.errors import ApiError
from api.job_events import JobEventFeed, JobTimeout
from api.services import services
from api.sse import sse_response
from contracts.jobs import DoneEvent, ErrorEvent, ErrorInfo, GenerationResult, JobEvent

EventStream = Iterator[tuple[str, JobEvent]]


def error_from_info(info: ErrorInfo, job_id: str) -> ApiError:
    return ApiError(
        info.status, info.message, type=info.type, param=info.param, code=info.code, headers={"X-Request-Id": job_id}
    )


def timeout_error(job_id: str, seconds: float) -> ApiError:
    return ApiError(
        504,
        f"Job {job_id} did not finish within {seconds:g} s; it goes on running. "
        f"Poll GET /v1/jobs/{job_id} for its result.",
        type="timeout",
        code="job_timeout",
    )


def wait_for_result(feed: JobEventFeed, deadline: float) -> GenerationResult:
    """Block until the job's terminal event; its error becomes an ApiError. Closes the feed."""
    try:
        for _, event in feed.events(deadline=deadline):
            if isinstance(event, DoneEvent):
                return event.result
            if isinstance(event, ErrorEvent):
                raise error_from_info(event.error, feed.job_id)
    except JobTimeout:
        raise timeout_error(feed.job_id, services().settings.sync_timeout_s) from None
    finally:
        feed.close()
    raise AssertionError("event feed ended without a terminal event")


def stream_job(feed: JobEventFeed, deadline: float, frames: Callable[[EventStream], Iterator[str]]):
    """An SSE response of `frames(events)` once the job started; failing before that is an HTTP error.

    A client that goes away before the end cancels the job: nobody would read the rest.
    """
    events = feed.events(deadline=deadline)
    try:
        _, first = next(events)
        if isinstance(first, ErrorEvent):
            raise error_from_info(first.error, feed.job_id)
    except JobTimeout:
        feed.close()
        raise timeout_error(feed.job_id, services().settings.sync_timeout_s) from None
    except BaseException:
        feed.close()
        raise
    store = services().store

    def guarded() -> Iterator[str]:
        finished = False
        try:
            yield from frames(events)
            finished = True
        finally:
            feed.close()
            if not finished:
                store.request_cancel(feed.job_id)

    return sse_response(guarded())
