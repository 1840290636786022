"""Writes job events to Redis from one background thread, in order, one round trip per write.

The decode loop never waits on Redis: it queues events here, one group per engine step (see
`coalesced_events`). Each write announces everything queued since the last one in a single
pub/sub message (live clients get every token at once), while the job's Stream, which only
clients resuming with Last-Event-ID read, gets a job's events in chunks: its first write at
once, then at most every CHUNK_AGE_S or CHUNK_EVENTS events, and its last ones in one entry with
its terminal event. A terminal event is queued like any other, so it always follows the job's
last token; `finish` returns once it is stored.

A job delivered again elsewhere (this worker froze past the visibility timeout, say) belongs to its
newer delivery: Redis refuses this worker's later writes for it (a Stream entry older than the
newer delivery's, a terminal event of an older delivery). The first refusal is logged once, as a
warning, and the job's remaining events and its end are dropped here.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from contracts import keys
from contracts.events import DoneEvent, DownloadProgress, ErrorEvent, JobEvent, ProgressEvent
from contracts.job_store import STALE, Ending, JobStore
from contracts.jobs import JobStatus

log = logging.getLogger(__name__)

# Most queued groups one write takes (one pipeline).
_MAX_PIPELINE = 512
# Redis's refusal of a Stream entry whose ID is not after the last one: another delivery's are.
_OLDER_ENTRY = "equal or smaller than the target stream top item"
# A job's events wait at most this long (or until there are this many) before they are stored:
# a client resuming a running job waits at most that long for the events it missed.
CHUNK_AGE_S = 1.0
CHUNK_EVENTS = 256

_held = threading.local()


@contextmanager
def coalesced_events() -> Iterator[None]:
    """Hold the events this thread emits inside the block and queue them as one group at its end.

    An engine wraps each step in it: all rows' tokens of the step go out in one write.
    """
    if getattr(_held, "groups", None) is not None:  # nested: the outer block sends
        yield
        return
    _held.groups = {}
    try:
        yield
    finally:
        groups, _held.groups = _held.groups, None
        for publisher, items in groups.items():
            publisher._queue.put(items)


@dataclass
class _Outgoing:
    job_id: str
    event: JobEvent | None = None
    status: JobStatus | None = None  # set for terminal events
    delivery: int | None = None  # set when the job starts on this worker
    record: dict[str, str] | None = None  # record fields written with the event
    written: threading.Event = field(default_factory=threading.Event)


@dataclass
class _JobLog:
    """What the writer thread knows of a running job: its last event ID and events not yet stored."""

    delivery: int
    sequence: int = 0
    unstored: list[str] = field(default_factory=list)
    oldest: float = 0.0  # when the first unstored event was queued
    stored_any: bool = False


class EventPublisher:
    """`start` a job, queue its events with `emit`, end it with `finish`; a thread writes them."""

    def __init__(self, store: JobStore) -> None:
        self.store = store
        self._queue: queue.Queue[list[_Outgoing] | None] = queue.Queue()
        self._jobs: dict[str, _JobLog] = {}  # only the writer thread touches it
        self._superseded: set[str] = set()  # jobs delivered again elsewhere, until they end here
        self._thread = threading.Thread(target=self._run, name="event-publisher", daemon=True)
        self._thread.start()

    def start(self, job_id: str, delivery: int) -> None:
        """Number the job's events from here on after its delivery count (see contracts.job_store)."""
        self._queue.put([_Outgoing(job_id, delivery=delivery)])

    def emit(self, job_id: str, event: JobEvent, record: dict[str, str] | None = None) -> None:
        self._put(_Outgoing(job_id, event, record=record))

    def report_progress(self, job_id: str, progress: DownloadProgress) -> None:
        """Keep the latest progress in the job record and emit it as an event."""
        self.emit(job_id, ProgressEvent(progress=progress), record={"progress": progress.model_dump_json()})

    def finish(self, job_id: str, event: DoneEvent | ErrorEvent, status: JobStatus, timeout: float = 30) -> None:
        """Queue the terminal event and wait until it is in Redis."""
        self.finish_many([(job_id, event, status)], timeout)

    def finish_many(self, outcomes: list[tuple[str, DoneEvent | ErrorEvent, JobStatus]], timeout: float = 30) -> None:
        """Queue several jobs' terminal events (written in one pipeline) and wait until they are in Redis."""
        outgoing = [_Outgoing(job_id, event, status) for job_id, event, status in outcomes]
        self._queue.put(outgoing)
        deadline = time.monotonic() + timeout
        for item in outgoing:
            if not item.written.wait(max(0.0, deadline - time.monotonic())):
                log.error("terminal event not written in time", extra={"job_id": item.job_id})

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _put(self, item: _Outgoing) -> None:
        groups = getattr(_held, "groups", None)
        if groups is None:
            self._queue.put([item])
        else:
            groups.setdefault(self, []).append(item)

    def _run(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=self._until_chunk_due())
            except queue.Empty:
                self._write([])  # only chunks that are due
                continue
            groups = [first]
            while len(groups) < _MAX_PIPELINE:
                try:
                    groups.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            closing = None in groups
            self._write([item for group in groups if group is not None for item in group])
            if closing:
                return

    def _until_chunk_due(self) -> float | None:
        oldest = min((job.oldest for job in self._jobs.values() if job.unstored), default=None)
        return None if oldest is None else max(0.0, oldest + CHUNK_AGE_S - time.monotonic())

    def _write(self, batch: list[_Outgoing]) -> None:
        """One pipeline: record fields, due chunks, one announcement of every new event, terminals."""
        pipe = self.store.client.pipeline(transaction=False)
        announced: list[tuple[str, str, str]] = []
        terminals: list[tuple[_Outgoing, str]] = []
        now = time.monotonic()
        for item in batch:
            if item.delivery is not None:
                self._superseded.discard(item.job_id)
                self._jobs[item.job_id] = _JobLog(item.delivery)
                continue
            if item.job_id in self._superseded:  # a newer delivery owns it: Redis would refuse these too
                if item.status is not None:
                    self._superseded.discard(item.job_id)  # it ended here: nothing more will come
                continue
            job = self._jobs.get(item.job_id)
            if item.status is not None:
                event_id = f"{job.delivery}-{job.sequence + 1}" if job else ""  # "": not started here
                terminals.append((item, event_id))
                continue
            if job is None:  # the job ended (e.g. failed) before its engine's last step was written
                log.debug("event of a job not running here dropped", extra={"job_id": item.job_id})
                continue
            job.sequence += 1
            data = item.event.model_dump_json()
            announced.append((item.job_id, f"{job.delivery}-{job.sequence}", data))
            if not job.unstored:
                job.oldest = now
            job.unstored.append(data)
            if item.record:
                pipe.hset(keys.job_key(item.job_id), mapping=item.record)
        ending = {item.job_id for item, _ in terminals}
        stream_writes: dict[int, str] = {}  # pipeline position of each Stream write -> its job
        for job_id, job in self._jobs.items():
            # A job's first write (its started event) is stored at once: a rerun after this
            # worker dies then shows where the first attempt began. An ending job's last events
            # go into its terminal event's entry (see JobStore.finish).
            due = job.unstored and (
                not job.stored_any
                or (len(job.unstored) >= CHUNK_EVENTS and job_id not in ending)
                or (now - job.oldest >= CHUNK_AGE_S and job_id not in ending)
            )
            if due:
                last_id = f"{job.delivery}-{job.sequence}"
                stream_writes[len(pipe.command_stack)] = job_id
                self.store.append_events(pipe, job_id, last_id, job.unstored, first=not job.stored_any)
                job.unstored, job.stored_any = [], True
        if announced:
            self.store.announce(pipe, announced)
        endings = []
        for item, event_id in terminals:
            job = self._jobs.pop(item.job_id, None)
            endings.append(Ending(item.job_id, item.event, item.status, event_id, job.unstored if job else []))
        finishing = len(pipe.command_stack) if endings else None
        if endings:  # one script for all, their terminal events announced together
            self.store.finish_many(endings, client=pipe)
        try:
            replies = pipe.execute(raise_on_error=False)
            for position, reply in enumerate(replies):
                job_id = stream_writes.get(position)
                if job_id is not None and isinstance(reply, Exception) and _OLDER_ENTRY in str(reply):
                    self._supersede(job_id)
                elif isinstance(reply, Exception):
                    log.error("writing an event failed", extra={"error": str(reply), "job_id": job_id})
            if finishing is not None and isinstance(replies[finishing], list):
                for ending, written in zip(endings, replies[finishing], strict=True):
                    if written in (STALE, STALE.encode()):
                        self._supersede(ending.job_id, int(ending.event_id.partition("-")[0]))
                        self._superseded.discard(ending.job_id)  # it ended here
        except Exception:
            log.exception("writing events failed", extra={"events": len(batch)})
        finally:
            for item in batch:
                item.written.set()

    def _supersede(self, job_id: str, delivery: int | None = None) -> None:
        """The job was delivered again, to another worker: warn once, and write nothing more of it."""
        job = self._jobs.pop(job_id, None)
        if job_id in self._superseded:
            return
        self._superseded.add(job_id)
        delivery = job.delivery if job is not None else delivery
        log.warning(
            "job %s was delivered again to another worker while this one ran it as delivery %s: a newer "
            "delivery owns the job and its events, so Redis refuses this worker's writes for it; the rest "
            "of them are dropped",
            job_id,
            delivery,
            extra={"job_id": job_id, "delivery": delivery},
        )
