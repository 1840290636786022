"""What every generation stream does alike: finish reasons, and frames for done, error and restart."""

from __future__ import annotations

import json
from collections.abc import Callable

from api.queue.responses import error_from_info
from api.sse import sse_frame
from contracts.errors import ErrorInfo
from contracts.events import DoneEvent, ErrorEvent, StartedEvent


def restarted_error(job_id: str) -> ErrorInfo:
    """Sent to a stream whose job restarted on another worker: text already sent cannot be taken back."""
    return ErrorInfo(
        status=503,
        type="server_error",
        code="worker_restarted",
        message=f"The worker running job {job_id} died; the job restarted elsewhere. "
        f"Poll GET /v1/jobs/{job_id} for its result.",
    )


def non_delta_frames(event, job_id: str, usage_chunk: Callable[[dict], str] | None) -> list[str]:
    """Frames for the events every stream treats alike: done (usage), error, a restart (error)."""
    if isinstance(event, DoneEvent):
        return [usage_chunk(event.result.usage.model_dump())] if usage_chunk else []
    if isinstance(event, ErrorEvent):
        return [sse_frame(json.dumps(error_from_info(event.error, job_id).body()))]
    if isinstance(event, StartedEvent):
        return [sse_frame(json.dumps(error_from_info(restarted_error(job_id), job_id).body()))]
    return []
