"""Following jobs' events in the API: one subscription per process, fanned out to waiters.

Workers announce every job's events on one channel, several jobs' events per message. Instead of
a Redis connection per waiting request, each API process keeps one SUBSCRIBE to it and hands each
job's events to the requests waiting on that job. A waiter registers before its job is enqueued,
so nothing is missed. Event IDs are consecutive, so a waiter sees when it missed some (a
reconnect, or it resumed after events that are announced but not yet stored): it holds the live
ones and reads the job's Stream until the gap is filled. On quiet ticks it also reads the Stream,
so a message lost in a reconnect cannot stall it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator

import redis

from contracts import keys
from contracts.events import TERMINAL_EVENT_TYPES, JobEvent, job_event_adapter
from contracts.job_store import EventId, JobStore, follows, format_event_id, parse_event_id, parse_live_lines

log = logging.getLogger(__name__)

# How long a waiter sleeps on its queue before it checks the Stream (and its deadline) itself.
QUIET_TICK_S = 1.0
# How long a waiter that missed events waits for them to be stored before it reads the Stream again.
GAP_RETRY_S = 0.1
# Put in every waiter's queue when the hub subscribed again after losing Redis: read the Stream.
RESYNC = None


class JobTimeout(Exception):
    """The job did not reach its terminal event before the deadline."""


class JobEventHub:
    """One SUBSCRIBE per process; `register(job_id)` returns a queue that receives the job's messages."""

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
                pubsub.subscribe(keys.JOB_EVENTS_CHANNEL)
                while True:
                    message = pubsub.get_message(timeout=QUIET_TICK_S)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        failures = 0
                        self._subscribed.set()
                        self._broadcast(RESYNC)  # anything published while disconnected is in the Streams
                    elif message["type"] == "message":
                        self._deliver(message["data"].decode())
            except redis.RedisError:
                self._subscribed.clear()
                failures += 1
                if failures == 1:  # once per outage, not every retry
                    log.warning("job event subscription lost; reconnecting", exc_info=True)
                time.sleep(0.5)
            finally:
                pubsub.close()

    def _deliver(self, message: str) -> None:
        """Hand each waiting job its (event ID, JSON) pairs of the message, in one put."""
        by_job: dict[str, list[tuple[str, str]]] = {}
        for job_id, event_id, data in parse_live_lines(message):
            by_job.setdefault(job_id, []).append((event_id, data))
        with self._lock:
            targets = [(list(self._waiters.get(job_id, ())), events) for job_id, events in by_job.items()]
        for waiters, events in targets:
            for waiter in waiters:
                waiter.put(events)

    def _broadcast(self, data: str) -> None:
        with self._lock:
            waiters = [w for group in self._waiters.values() for w in group]
        for waiter in waiters:
            waiter.put(data)


class JobEventFeed:
    """A job's events: those stored after a point, then live ones, up to the terminal event.

    Registers with the hub on creation, so nothing published after that is lost; events seen both
    in the Stream and live are yielded once, and always in order with none missing. A `fresh`
    feed is made before its job is enqueued: nothing can be stored yet, so it starts with the live
    messages instead of reading the Stream.
    """

    def __init__(self, store: JobStore, hub: JobEventHub, job_id: str, fresh: bool = False) -> None:
        self.store = store
        self.hub = hub
        self.job_id = job_id
        self.fresh = fresh
        self._waiter = hub.register(job_id)

    def events(self, after: str | None = None, deadline: float | None = None) -> Iterator[tuple[str, JobEvent]]:
        """(event ID, event) pairs after `after` (an event ID; ValueError if it is not one)."""
        last: EventId | None = parse_event_id(after) if after else None
        held: dict[EventId, str] = {}  # live events that came before the ones right after `last`
        read_stream = not (self.fresh and after is None)
        while True:
            if read_stream:
                try:
                    replay = self.store.replay(self.job_id, last)
                except redis.ConnectionError:  # Redis failing over: the job goes on; look again next tick
                    log.warning("job events unreadable; retrying", extra={"job_id": self.job_id})
                    read_stream = self._wait(held, last, deadline)
                    continue
                if replay.ended:
                    return
                # What the Stream holds is complete up to its last event: no gap to wait for.
                for event_id, data in replay.events:
                    last = parse_event_id(event_id)
                    event = job_event_adapter.validate_json(data)
                    yield event_id, event
                    if event.type in TERMINAL_EVENT_TYPES:
                        return
            for event_id, data in self._in_order(held, last, skip_lost=read_stream):
                last = event_id
                event = job_event_adapter.validate_json(data)
                yield format_event_id(event_id), event
                if event.type in TERMINAL_EVENT_TYPES:
                    return
            read_stream = self._wait(held, last, deadline)

    @staticmethod
    def _in_order(held: dict[EventId, str], last: EventId | None, skip_lost: bool) -> list[tuple[EventId, str]]:
        """Take from `held` the events that follow `last` without a gap (dropping those already seen).

        With `skip_lost` (the Stream was just read, so the gap is not stored), held events before a
        later delivery's first one are dropped: they were lost with a worker that died.
        """
        ready = []
        while held:
            first = min(held)
            if last is not None and first <= last:
                del held[first]
                continue
            if not follows(last, first):
                restart = next((e for e in sorted(held) if follows(last, e)), None) if skip_lost else None
                if restart is None:
                    break
                for lost in [e for e in held if e < restart]:
                    del held[lost]
                first = restart
            ready.append((first, held.pop(first)))
            last = first
        return ready

    def _wait(self, held: dict[EventId, str], last: EventId | None, deadline: float | None) -> bool:
        """Wait for live events (into `held`); True when the Stream should be read instead.

        That is on a quiet tick, a hub resync, or while a gap before the held events stays open.
        """
        started = time.monotonic()
        while True:
            tick = GAP_RETRY_S if held else QUIET_TICK_S
            remaining = tick - (time.monotonic() - started)
            if deadline is not None:
                if deadline - time.monotonic() <= 0:
                    raise JobTimeout(self.job_id)
                remaining = min(remaining, deadline - time.monotonic())
            if remaining <= 0:
                return True
            try:
                message = self._waiter.get(timeout=remaining)
            except queue.Empty:
                return True
            if message is RESYNC:
                return True
            for event_id, data in message:
                held[parse_event_id(event_id)] = data
            first = min(held)
            if follows(last, first) or (last is not None and first <= last):
                return False

    def close(self) -> None:
        self.hub.unregister(self.job_id, self._waiter)
