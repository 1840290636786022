"""Answering a request from its job: wait for the result, stream frames, or 202 and the job.

A finished job's result is shown in the shape its endpoint returns; each endpoint registers how
(`register_renderer`, called by the app factory), so this module never imports an endpoint.
"""

from __future__ import annotations

import logging
import re
import select
import socket
import threading
import time
from collections.abc import Callable, Generator, Iterator
from typing import Any

import redis
from flask import g, jsonify, request, url_for
from pydantic import BaseModel

from api.errors import ApiError
from api.queue.events import JobEventFeed, JobTimeout
from api.request_logging import tag_request
from api.sse import sse_response
from contracts.errors import ErrorInfo
from contracts.events import DoneEvent, ErrorEvent, GenerationResult, JobEvent
from contracts.job_store import JobRecord, JobStore
from contracts.jobs import JobKind

EventStream = Iterator[tuple[str, JobEvent]]
# Renders a finished job's result (validated as its kind's result model) for GET /v1/jobs/{id}.
ResultRenderer = Callable[[JobRecord, Any], dict]

# What a job ID can look like (ours are uuid4 hex); anything else cannot name a job, and is never
# echoed into a header or used in a Redis key.
JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")

_renderers: dict[str, tuple[type[BaseModel], ResultRenderer]] = {}
# How often a waiting request's watcher looks whether its client is still connected (and whether
# the wait is over): a client that went away has its job cancelled within about this long.
DISCONNECT_POLL_S = 0.25
log = logging.getLogger(__name__)


def register_renderer(kind: JobKind, shape: type[BaseModel], render: ResultRenderer) -> None:
    """Show results of `kind` jobs (parsed as `shape`) as `render(record, result)` returns them."""
    _renderers[kind.value] = (shape, render)


def error_from_info(info: ErrorInfo, job_id: str) -> ApiError:
    return ApiError.of(info, headers={"X-Request-Id": job_id})


def timeout_error(job_id: str, seconds: float) -> ApiError:
    return ApiError(
        504,
        f"Job {job_id} did not finish within {seconds:g} s; it goes on running. "
        f"Poll GET /v1/jobs/{job_id} for its result.",
        type="timeout",
        code="job_timeout",
    )


def wait_for_result(feed: JobEventFeed, timeout_s: float, cancel_on_disconnect: bool = False) -> GenerationResult:
    """Block (up to `timeout_s`) until the job's terminal event; its error becomes an ApiError. Closes the feed.

    With `cancel_on_disconnect`, a client that goes away meanwhile cancels the job, as a stream's does.
    """
    watcher = DisconnectWatcher.start(feed.store, feed.job_id) if cancel_on_disconnect else None
    try:
        for _, event in feed.events(deadline=time.monotonic() + timeout_s):
            if isinstance(event, DoneEvent):
                return event.result
            if isinstance(event, ErrorEvent):
                raise error_from_info(event.error, feed.job_id)
    except JobTimeout:
        raise timeout_error(feed.job_id, timeout_s) from None
    finally:
        if watcher is not None:
            watcher.stop()
        feed.close()
    raise AssertionError("event feed ended without a terminal event")


def client_socket(environ: dict) -> socket.socket | None:
    """The request's client connection: gunicorn's (gevent workers) or werkzeug's (its dev server)."""
    sock = environ.get("gunicorn.socket") or environ.get("werkzeug.socket")
    return sock if isinstance(sock, socket.socket) else None


def client_closed(sock: socket.socket, timeout_s: float) -> bool | None:
    """Whether the client closed its side within `timeout_s` (True), is still there (False), or sent
    more bytes, a pipelined request, so that its end can no longer be told apart (None)."""
    poller = select.poll()  # not select(): a gevent worker's descriptors go past FD_SETSIZE
    poller.register(sock.fileno(), select.POLLIN)
    if not poller.poll(timeout_s * 1000):
        return False
    try:
        peeked = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:  # reset by the peer
        return True
    return None if peeked else True


class DisconnectWatcher:
    """Watches a synchronous request's connection while it waits, and cancels its job if the client
    goes away: nobody would read the answer. A thread (a greenlet under gevent) per waiting request."""

    def __init__(self, store: JobStore, job_id: str, sock: socket.socket) -> None:
        self.store = store
        self.job_id = job_id
        self.sock = sock
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="disconnect-watcher", daemon=True)

    @classmethod
    def start(cls, store: JobStore, job_id: str) -> DisconnectWatcher | None:
        sock = client_socket(request.environ)
        if sock is None:
            return None
        watcher = cls(store, job_id, sock)
        watcher._thread.start()
        return watcher

    def stop(self) -> None:
        self._done.set()

    def _watch(self) -> None:
        while not self._done.is_set():
            try:
                closed = client_closed(self.sock, DISCONNECT_POLL_S)
            except (OSError, ValueError):  # the server closed the socket: the request is over
                return
            if closed is None:
                return
            if closed and not self._done.is_set():
                log.info("client went away; cancelling its job", extra={"job_id": self.job_id})
                try:
                    self.store.request_cancel(self.job_id)
                except redis.RedisError:
                    log.warning("cancelling a job whose client went away failed", extra={"job_id": self.job_id})
                return


def stream_job(feed: JobEventFeed, timeout_s: float, frames: Callable[[EventStream], Iterator[str]]):
    """An SSE response of `frames(events)` once the job started (within `timeout_s`); failing
    before that is an HTTP error.

    A client that goes away before the end cancels the job: nobody would read the rest.
    """
    events = feed.events(deadline=time.monotonic() + timeout_s)
    try:
        _, first = next(events)
        if isinstance(first, ErrorEvent):
            raise error_from_info(first.error, feed.job_id)
    except JobTimeout:
        feed.close()
        raise timeout_error(feed.job_id, timeout_s) from None
    except BaseException:
        feed.close()
        raise
    return cancelling_stream(feed, frames(events))


def cancelling_stream(feed: JobEventFeed, frames: Generator[str, None, object]):
    """An SSE response of `frames`; a client that goes away before they end (or frames that return
    False: the stream timed out) cancels the job, since nobody would read the rest."""
    store = feed.store

    def guarded() -> Iterator[str]:
        ended = False
        try:
            ended = (yield from frames) is not False
        finally:
            feed.close()
            if not ended:
                store.request_cancel(feed.job_id)

    return sse_response(guarded())


def find_job(store: JobStore, job_id: str) -> JobRecord:
    """The job's record, which becomes the request's subject (its ID); 404 if there is none, or if it
    belongs to another API key than the request's."""
    record = store.get(job_id) if JOB_ID.fullmatch(job_id) else None
    key = g.get("api_key_id")
    if record is None or (key is not None and record.owner not in (None, key)):
        raise ApiError(404, f"No job with ID '{job_id}' (it may have expired).", param="job_id", code="job_not_found")
    tag_request(job_id)
    return record


def job_body(record: JobRecord) -> dict:
    """A job as clients see it: status, timestamps, worker, and the result in its API's shape."""
    result = record.result
    if result is not None and record.kind in _renderers:
        shape, render = _renderers[record.kind]
        result = render(record, shape(**result))
    error = {k: v for k, v in record.error.items() if k != "status"} if record.error else None
    batch_size = record.result.get("batch_size") if record.result else None
    first_token_at = record.result.get("first_token_at") if record.result else None
    return {
        "id": record.job_id,
        "object": "job",
        "kind": record.kind,
        "model": record.model,
        "status": record.status.value,
        "created_at": record.created_at,
        "started_at": record.started_at,
        "finished_at": record.finished_at,
        # When a generation's first token was decoded (the worker's clock; null for other jobs).
        "first_token_at": first_token_at,
        "worker": record.worker,
        "result": result,
        "error": error,
        # How many sequences (generation) or texts (embeddings) ran together with this job's.
        "batch_size": batch_size,
        # Long jobs (downloads): bytes done and total, per file and overall.
        "progress": record.progress,
    }


def accepted(store: JobStore, job_id: str):
    """202 for a job submitted with `Prefer: respond-async`."""
    headers = {"Location": url_for("jobs.get_job", job_id=job_id), "Preference-Applied": "respond-async"}
    return jsonify(job_body(find_job(store, job_id))), 202, headers
