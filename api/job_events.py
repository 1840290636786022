"""Following jobs' events in the API: one pattern subscription per process, fanned out to waiters.

Every job announces its events on `ladle:job:{id}:live`. Instead of a Redis connection per waiting
request, each API process keeps one PSUBSCRIBE to all job channels and hands messages to the
requests waiting on that job. A waiter registers before its job is enqueued, so nothing is missed;
on quiet ticks it also reads the job's Stream, so a message lost in a reconnect cannot stall it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator

import redis

from contracts import keys
from contracts.job_store import JobStore, parse_stream_id
from contracts.jobs import TERMINAL_EVENT_TYPES, JobEvent, job_event_adapter

log = logging.getLogger(__name__)

# How long a waiter sleeps on its queue before it checks the Stream (and its deadline) itself.
QUIET_TICK_S = 1.0
# Put in every waiter's queue when the hub subscribed again after losing Redis: read the Stream.
RESYNC = ""


class JobTimeout(Exception):
    """The job did not reach its terminal event before the deadline."""


class JobEventHub:
    """One PSUBSCRIBE per process; `register(job_id)` returns a queue that receives the job's messages."""

    def __init__(self, client: redis.Redis, subscribe_timeout_s: float = 5.0) -> None:
        self.client = client
        self.subscribe_timeout_s = subscribe_timeout_s
        self._waiters: dict[str, set[queue.SimpleQueue]] = {}
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._thread: threading.Thread | None = None

    def register(self, job_id: str) -> queue.SimpleQueue:
        self._ensure_listening()
        waiter: queue.SimpleQueue = queue.SimpleQueue()
        with self._lock:
            self._waiters.setdefault(job_id, set()).add(waiter)
        return waiter

    def unregister(self, job_id: str, waiter: queue.SimpleQueue) -> None:
        with self._lock:
            waiters = self._waiters.get(job_id, set())
            waiters.discard(waiter)
            if not waiters:
                self._waiters.pop(job_id, None)

    def _ensure_listening(self) -> None:
        with self._lock:  # started lazily: after a server forks its workers, not before
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="job-event-hub", daemon=True)
                self._thread.start()
        if not self._subscribed.wait(self.subscribe_timeout_s):
            raise redis.ConnectionError("could not subscribe to job events")

    def _run(self) -> None:
        failures = 0
        while True:
            pubsub = self.client.pubsub()
            try:
                pubsub.psubscribe(keys.job_channel("*"))
                while True:
                    message = pubsub.get_message(timeout=QUIET_TICK_S)
                    if message is None:
                        continue
                    if message["type"] == "psubscribe":
                        failures = 0
                        self._subscribed.set()
                        self._broadcast(RESYNC)  # anything published while disconnected is in the Streams
                    elif message["type"] == "pmessage":
                        self._deliver(message["channel"].decode(), message["data"].decode())
            except redis.RedisError:
                self._subscribed.clear()
                failures += 1
                if failures == 1:  # once per outage, not every retry
                    log.warning("job event subscription lost; reconnecting", exc_info=True)
                time.sleep(0.5)
            finally:
                pubsub.close()

    def _deliver(self, channel: str, data: str) -> None:
        prefix, suffix = keys.job_channel("\0").split("\0")
        job_id = channel.removeprefix(prefix).removesuffix(suffix)
        with self._lock:
            waiters = list(self._waiters.get(job_id, ()))
        for waiter in waiters:
            waiter.put(data)

    def _broadcast(self, data: str) -> None:
        with self._lock:
            waiters = [w for group in self._waiters.values() for w in group]
        for waiter in waiters:
            waiter.put(data)


class JobEventFeed:
    """A job's events: those stored after a point, then live ones, up to the terminal event.

    Registers with the hub on creation, so nothing published after that is lost; events seen both
    in the Stream and live are yielded once. A `fresh` feed is made before its job is enqueued:
    nothing can be stored yet, so it starts with the live messages instead of reading the Stream.
    """

    def __init__(self, store: JobStore, hub: JobEventHub, job_id: str, fresh: bool = False) -> None:
        self.store = store
        self.hub = hub
        self.job_id = job_id
        self.fresh = fresh
        self._waiter = hub.register(job_id)

    def events(self, after: str | None = None, deadline: float | None = None) -> Iterator[tuple[str, JobEvent]]:
        last = after
        batch = [] if self.fresh and after is None else self.store.events_after(self.job_id, last)
        while True:
            for stream_id, data in batch:
                if last is not None and parse_stream_id(stream_id) <= parse_stream_id(last):
                    continue
                last = stream_id
                event = job_event_adapter.validate_json(data)
                yield stream_id, event
                if event.type in TERMINAL_EVENT_TYPES:
                    return
            batch = self._next(last, deadline)

    def _next(self, last: str | None, deadline: float | None) -> list[tuple[str, str]]:
        """The next live message; on a quiet tick or a hub resync, what the Stream holds after `last`."""
        remaining = QUIET_TICK_S if deadline is None else deadline - time.monotonic()
        if remaining <= 0:
            raise JobTimeout(self.job_id)
        try:
            message = self._waiter.get(timeout=min(remaining, QUIET_TICK_S))
        except queue.Empty:
            message = RESYNC
        if message == RESYNC:
            try:
                return self.store.events_after(self.job_id, last)
            except redis.ConnectionError:  # Redis failing over: the job goes on; look again next tick
                log.warning("job events unreadable; retrying", extra={"job_id": self.job_id})
                return []
        stream_id, _, data = message.partition("\n")
        return [(stream_id, data)]

    def close(self) -> None:
        self.hub.unregister(self.job_id, self._waiter)
