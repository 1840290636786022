"""Writes job events to Redis from one background thread, in order, in pipelined batches.

The decode loop never waits on Redis: it queues events here. A terminal event is queued like
any other, so it always follows the job's last token; `finish` returns once it is stored.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field

from contracts.job_store import JobStore
from contracts.jobs import DoneEvent, ErrorEvent, JobEvent, JobStatus

log = logging.getLogger(__name__)

_MAX_PIPELINE = 512


@dataclass
class _Outgoing:
    job_id: str
    event: JobEvent
    status: JobStatus | None = None  # set for terminal events
    written: threading.Event = field(default_factory=threading.Event)


class EventPublisher:
    """Queue events with `emit`/`finish`; a thread stores and announces them."""

    def __init__(self, store: JobStore) -> None:
        self.store = store
        self._queue: queue.Queue[_Outgoing | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="event-publisher", daemon=True)
        self._thread.start()

    def emit(self, job_id: str, event: JobEvent) -> None:
        self._queue.put(_Outgoing(job_id, event))

    def finish(self, job_id: str, event: DoneEvent | ErrorEvent, status: JobStatus, timeout: float = 30) -> None:
        """Queue the terminal event and wait until it is in Redis."""
        self.finish_many([(job_id, event, status)], timeout)

    def finish_many(self, outcomes: list[tuple[str, DoneEvent | ErrorEvent, JobStatus]], timeout: float = 30) -> None:
        """Queue several jobs' terminal events (written in one pipeline) and wait until they are in Redis."""
        outgoing = [_Outgoing(job_id, event, status) for job_id, event, status in outcomes]
        for item in outgoing:
            self._queue.put(item)
        deadline = time.monotonic() + timeout
        for item in outgoing:
            if not item.written.wait(max(0.0, deadline - time.monotonic())):
                log.error("terminal event not written in time", extra={"job_id": item.job_id})

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < _MAX_PIPELINE:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            closing = None in batch
            self._write([item for item in batch if item is not None])
            if closing:
                return

    def _write(self, batch: list[_Outgoing]) -> None:
        try:
            pipe = self.store.client.pipeline(transaction=False)
            for item in batch:
                if item.status is None:
                    self.store.emit(item.job_id, item.event, client=pipe)
                else:
                    self.store.finish(item.job_id, item.event, item.status, client=pipe)
            pipe.execute()
        except Exception:
            log.exception("writing events failed", extra={"events": len(batch)})
        finally:
            for item in batch:
                item.written.set()
