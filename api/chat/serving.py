"""Chat jobs rendered as OpenAI responses: one body, or a stream of chunks then [DONE]."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

from api.errors import ApiError
from api.job_client import JobEventFeed, JobTimeout
from api.sse import DONE_FRAME, sse_frame
from contracts.jobs import DeltaEvent, DoneEvent, ErrorEvent, ErrorInfo, GenerationResult, JobEvent, StartedEvent


def completion_id(job_id: str) -> str:
    return f"chatcmpl-{job_id}"


def completion_body(job_id: str, model: str, created: int, result: GenerationResult) -> dict:
    """A `chat.completion` object."""
    return {
        "id": completion_id(job_id),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": c.index,
                "message": {"role": "assistant", "content": c.text},
                "logprobs": None,
                "finish_reason": "stop" if c.finish_reason == "cancelled" else c.finish_reason,
            }
            for c in result.choices
        ],
        "usage": result.usage.model_dump(),
        "system_fingerprint": None,
    }


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


def wait_for_result(feed: JobEventFeed, deadline: float, timeout_s: float) -> GenerationResult:
    """Block until the job's terminal event; raise its error as an ApiError."""
    try:
        for _, event in feed.events(deadline=deadline):
            if isinstance(event, DoneEvent):
                return event.result
            if isinstance(event, ErrorEvent):
                raise error_from_info(event.error, feed.job_id)
    except JobTimeout:
        raise timeout_error(feed.job_id, timeout_s) from None
    raise AssertionError("event feed ended without a terminal event")


def first_event(events: Iterator[tuple[str, JobEvent]], job_id: str) -> JobEvent:
    """The job's first event; a job that failed before starting becomes an HTTP error."""
    _, event = next(events)
    if isinstance(event, ErrorEvent):
        raise error_from_info(event.error, job_id)
    return event


def chunk_frames(
    events: Iterator[tuple[str, JobEvent]], job_id: str, model: str, n: int, include_usage: bool
) -> Iterator[str]:
    """`chat.completion.chunk` frames for the events of a started job, ending in [DONE]."""
    created = int(time.time())

    def chunk(choices: list[dict], usage: dict | None = None) -> str:
        body = {
            "id": completion_id(job_id),
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": None,
            "choices": choices,
        }
        if include_usage:
            body["usage"] = usage
        return sse_frame(json.dumps(body))

    yield chunk([_choice(i, {"role": "assistant", "content": ""}) for i in range(n)])
    for _, event in events:
        if isinstance(event, DeltaEvent):
            if event.text:
                yield chunk([_choice(event.index, {"content": event.text})])
            if event.finish_reason and event.finish_reason != "cancelled":
                yield chunk([_choice(event.index, {}, event.finish_reason)])
        elif isinstance(event, DoneEvent):
            if include_usage:
                yield chunk([], event.result.usage.model_dump())
        elif isinstance(event, ErrorEvent):
            yield sse_frame(json.dumps(error_from_info(event.error, job_id).body()))
        elif isinstance(event, StartedEvent):
            # Its worker died and another restarted the job: text already sent cannot be taken back.
            restarted = ErrorInfo(
                status=503,
                type="server_error",
                code="worker_restarted",
                message=f"The worker running job {job_id} died; the job restarted elsewhere. "
                f"Poll GET /v1/jobs/{job_id} for its result.",
            )
            yield sse_frame(json.dumps(error_from_info(restarted, job_id).body()))
            break
    yield DONE_FRAME


def _choice(index: int, delta: dict, finish_reason: str | None = None) -> dict:
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
