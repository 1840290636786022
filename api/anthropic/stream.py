"""Anthropic's streams: open from the first interval on, with a ping on every quiet interval.

Unlike the OpenAI streams (api/queue/responses.py, `stream_job`), which answer only once the job
started, a message stream opens after at most one ping interval even while its job waits in the
queue, and sends `ping` events while it waits: an SDK or proxy reading it sees it alive. A job that
fails within the first interval (it did not fit the context, no worker took it) is still an HTTP
error. A client that goes away cancels the job, as on the other streams.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Generator, Iterator

from api.anthropic.render import StreamItem
from api.queue.events import JobEventFeed, JobTimeout
from api.queue.responses import cancelling_stream, error_from_info, timeout_error
from contracts.events import ErrorEvent

# The longest a stream stays silent, and the longest a request waits for its job before the stream opens.
PING_INTERVAL_S = 10.0


def ticking_events(feed: JobEventFeed, deadline: float) -> Iterator[StreamItem]:
    """The job's events, and None after each PING_INTERVAL_S without one; JobTimeout past `deadline`."""
    last: str | None = None
    while True:
        quiet = True
        try:
            for event_id, event in feed.events(after=last, deadline=min(deadline, time.monotonic() + PING_INTERVAL_S)):
                last, quiet = event_id, False
                yield event_id, event
            return
        except JobTimeout:
            if time.monotonic() >= deadline:
                raise
        # The feed resumes after the last event it gave (from the job's Stream), so none is lost.
        if quiet:
            yield None


def stream_message(
    feed: JobEventFeed, timeout_s: float, frames: Callable[[Iterator[StreamItem]], Generator[str, None, bool]]
):
    """An SSE response of `frames(items)`, or an HTTP error when the job fails within the first interval."""
    items = ticking_events(feed, time.monotonic() + timeout_s)
    try:
        first = next(items)
        if first is not None and isinstance(first[1], ErrorEvent):
            raise error_from_info(first[1].error, feed.job_id)
    except JobTimeout:
        feed.close()
        raise timeout_error(feed.job_id, timeout_s) from None
    except BaseException:
        feed.close()
        raise
    return cancelling_stream(feed, frames(itertools.chain([first], items)))
