"""The only writer of Server-Sent Events bytes."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from flask import Response, stream_with_context


def sse_frame(data: str, *, event: str | None = None, event_id: str | None = None) -> str:
    """One SSE frame, ending in the blank line that delimits it."""
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    if event is not None:
        lines.append(f"event: {event}")
    lines.extend(f"data: {line}" for line in data.split("\n"))
    return "\n".join(lines) + "\n\n"


DONE_FRAME = sse_frame("[DONE]")
# A comment frame: clients ignore it; it keeps proxies from closing a quiet stream.
KEEPALIVE_FRAME = ": keepalive\n\n"


def sse_response(frames: Iterable[str], headers: dict[str, str] | None = None) -> Response:
    """Stream frames to the client as text/event-stream, unbuffered."""

    def generate() -> Iterator[str]:
        # An empty first chunk sends the status line and headers now: a client following a job
        # that waits in the queue knows at once that its stream is open.
        yield ""
        yield from frames

    response = Response(stream_with_context(generate()), mimetype="text/event-stream", headers=headers)
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    return response
