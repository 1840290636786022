"""Submitting jobs and following their events: subscribe first, then enqueue, then read."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

from celery import Celery

from api.errors import ApiError
from contracts import keys
from contracts.job_store import JobStore, parse_stream_id
from contracts.jobs import COMPUTE_LANE, TERMINAL_EVENT_TYPES, JobEvent, JobKind, job_event_adapter, queue_for_device
from contracts.settings import Settings


class JobTimeout(Exception):
    """The job did not reach its terminal event before the deadline."""


def new_job_id() -> str:
    return uuid.uuid4().hex


class JobEventFeed:
    """A job's events: those stored after a point, then live ones, up to the terminal event.

    Subscribes on creation, so nothing published between creation and reading is lost; events
    seen both in the stream and live are yielded once.
    """

    def __init__(self, store: JobStore, job_id: str) -> None:
        self.store = store
        self.job_id = job_id
        self._pubsub = store.client.pubsub(ignore_subscribe_messages=True)
        self._pubsub.subscribe(keys.job_channel(job_id))

    def events(self, after: str | None = None, deadline: float | None = None) -> Iterator[tuple[str, JobEvent]]:
        last = parse_stream_id(after) if after else (-1, -1)
        for stream_id, data in self.store.events_after(self.job_id, after):
            last = parse_stream_id(stream_id)
            event = job_event_adapter.validate_json(data)
            yield stream_id, event
            if event.type in TERMINAL_EVENT_TYPES:
                return
        while True:
            remaining = 1.0 if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                raise JobTimeout(self.job_id)
            message = self._pubsub.get_message(timeout=min(remaining, 1.0))
            if message is None:
                continue
            stream_id, _, data = message["data"].decode().partition("\n")
            if parse_stream_id(stream_id) <= last:
                continue
            last = parse_stream_id(stream_id)
            event = job_event_adapter.validate_json(data)
            yield stream_id, event
            if event.type in TERMINAL_EVENT_TYPES:
                return

    def close(self) -> None:
        self._pubsub.close()


class JobClient:
    """The API's side of the job queue: checks for workers, records and enqueues jobs."""

    # A worker seen alive is trusted this long without asking Redis again (heartbeats expire
    # after three periods, so a dead worker is noticed within seconds either way).
    WORKER_SEEN_TTL_S = 1.0

    def __init__(self, settings: Settings, store: JobStore, celery: Celery) -> None:
        self.settings = settings
        self.store = store
        self.celery = celery
        self._worker_seen: dict[tuple[str, str], float] = {}

    def live_workers(self) -> list[dict]:
        """Workers whose heartbeat has not expired (dead ones drop out of the index after an hour)."""
        client = self.store.client
        now = time.time()
        pipe = client.pipeline()
        pipe.zremrangebyscore(keys.WORKERS_INDEX, "-inf", now - 3600)
        pipe.zrangebyscore(keys.WORKERS_INDEX, now - 60, "+inf")
        names = pipe.execute()[1]
        if not names:
            return []
        raw = client.mget([keys.worker_key(name.decode()) for name in names])
        return [json.loads(info) for info in raw if info]

    def require_worker(self, device: str, lane: str = COMPUTE_LANE) -> None:
        """Wait (bounded) for a live worker of `device` and `lane`; 503 with Retry-After if none."""
        if time.monotonic() - self._worker_seen.get((device, lane), -1e9) < self.WORKER_SEEN_TTL_S:
            return
        deadline = time.monotonic() + self.settings.worker_wait_s
        while not any(w.get("device") == device and w.get("lane") == lane for w in self.live_workers()):
            if time.monotonic() >= deadline:
                lane_text = "" if lane == COMPUTE_LANE else f" ({lane} lane)"
                raise ApiError(
                    503,
                    f"No worker for device '{device}'{lane_text} is available; retry later.",
                    type="service_unavailable",
                    code="no_worker",
                    headers={"Retry-After": "10"},
                )
            time.sleep(0.2)
        self._worker_seen[(device, lane)] = time.monotonic()

    def follow(self, job_id: str) -> JobEventFeed:
        return JobEventFeed(self.store, job_id)

    def submit(
        self, task: str, kind: JobKind, model: str, payload: dict, device: str, follow: bool, lane: str = COMPUTE_LANE
    ) -> JobEventFeed | None:
        """Record and enqueue the job `payload["job_id"]`; returns a feed when `follow` is set."""
        self.require_worker(device, lane)
        job_id = payload["job_id"]
        self.store.create(job_id, kind, model)
        feed = self.follow(job_id) if follow else None
        try:
            self.celery.send_task(task, args=[payload], queue=queue_for_device(device, lane), task_id=job_id)
        except Exception:
            if feed is not None:
                feed.close()
            raise
        return feed
