"""Runs any job on this worker with the same guards: delivery count, start once, errors as data."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from contracts.job_store import JobStore
from contracts.jobs import DoneEvent, ErrorEvent, ErrorInfo, JobStatus
from contracts.settings import Settings
from worker.errors import JobRejected
from worker.event_publisher import EventPublisher

log = logging.getLogger(__name__)

Job = TypeVar("Job", bound=BaseModel)
# What a job's work returns: its terminal event and status (the runner writes them).
Outcome = tuple[DoneEvent | ErrorEvent, JobStatus]


class JobRunner:
    """Parses a task payload and runs the work for it, ending the job with exactly one outcome."""

    def __init__(self, settings: Settings, store: JobStore, publisher: EventPublisher, worker_name: str) -> None:
        self.settings = settings
        self.store = store
        self.publisher = publisher
        self.worker_name = worker_name
        self.active = 0  # jobs running now (the heartbeat advertises it for routing)
        self._lock = threading.Lock()

    def run(self, payload: dict, job_type: type[Job], work: Callable[[Job], Outcome]) -> None:
        job_id = payload.get("job_id")
        try:
            job = job_type.model_validate(payload)
        except ValidationError as invalid:  # a payload that does not parse fails its job, never hangs it
            log.error("malformed job payload", extra={"job_id": job_id, "error": str(invalid)})
            if isinstance(job_id, str):
                self._fail(
                    job_id, ErrorInfo(status=500, type="server_error", code="bad_job", message="Unreadable job.")
                )
            return
        deliveries = self.store.count_delivery(job_id)
        if deliveries > self.settings.max_deliveries:
            log.error("job keeps killing workers; failing it", extra={"job_id": job_id, "deliveries": deliveries})
            message = f"The job was abandoned after {deliveries - 1} workers died running it."
            self._fail(job_id, ErrorInfo(status=500, type="server_error", code="worker_lost", message=message))
            return
        if not self.store.mark_running(job_id, self.worker_name):
            return  # finished before it started (cancelled while queued)
        with self._lock:
            self.active += 1
        try:
            event, status = work(job)
        except JobRejected as rejected:
            event, status = ErrorEvent(error=rejected.info), JobStatus.FAILED
        except Exception:
            log.exception("job failed", extra={"job_id": job_id})
            message = f"The worker failed while running job {job_id}."
            event = ErrorEvent(error=ErrorInfo(status=500, type="server_error", code="internal_error", message=message))
            status = JobStatus.FAILED
        finally:
            with self._lock:
                self.active -= 1
        self.publisher.finish(job_id, event, status)

    def _fail(self, job_id: str, info: ErrorInfo) -> None:
        self.publisher.finish(job_id, ErrorEvent(error=info), JobStatus.FAILED)
