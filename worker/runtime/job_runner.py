"""Runs any job on this worker with the same guards: delivery count, start once, errors as data."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TypeVar

from celery.exceptions import Reject
from pydantic import BaseModel, ValidationError

from contracts.errors import ErrorInfo, server_error
from contracts.events import DoneEvent, ErrorEvent
from contracts.job_store import Ending, JobStart, JobStore, format_event_id
from contracts.jobs import JobStatus
from contracts.settings import Settings
from worker.errors import JobRejected
from worker.runtime.drain import HandedBack, requeue_current_task
from worker.runtime.event_publisher import EventPublisher
from worker.runtime.job_metrics import JobMetrics

log = logging.getLogger(__name__)

Job = TypeVar("Job", bound=BaseModel)
# What a job's work returns: its terminal event and status (the runner writes them).
Outcome = tuple[DoneEvent | ErrorEvent, JobStatus]


class JobRunner:
    """Parses a task payload and runs the work for it, ending the job with exactly one outcome."""

    def __init__(
        self,
        settings: Settings,
        store: JobStore,
        publisher: EventPublisher,
        worker_name: str,
        metrics: JobMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.publisher = publisher
        self.worker_name = worker_name
        self.metrics = metrics or JobMetrics(store.client, enabled=False)
        self.active = 0  # jobs running now (the heartbeat advertises it for routing)
        self.draining = False  # the worker is stopping: jobs still arriving go straight back
        self._lock = threading.Lock()

    def run(self, payload: dict, job_type: type[Job], work: Callable[[Job], Outcome], events: bool = True) -> None:
        self.run_many([payload], job_type, lambda jobs: [work(jobs[0])], events)

    def run_many(
        self,
        payloads: list,
        job_type: type[Job],
        work: Callable[[list[Job]], list[Outcome]],
        events: bool = True,
    ) -> None:
        """Run the jobs of one task together: `work` gets those that start and returns one outcome each.

        `events=False`: the work emits no events, only its outcome, so this thread writes the
        outcomes itself (one round trip) rather than through the publisher's thread, which keeps
        a streaming job's end after its tokens (two thread hand-offs fewer for short jobs).

        Jobs handed back (the worker is stopping) go back to their queue at once, and the task ends
        with Celery's Reject(requeue=True) (a no-op then; the message is already settled).
        """
        if self.draining:
            requeue_current_task()
            raise Reject("the worker is stopping", requeue=True)
        jobs, starts = self._start(self._parse(payloads, job_type), events)
        if not jobs:
            return
        with self._lock:
            self.active += len(jobs)
        try:
            outcomes = work(jobs)
        except HandedBack:
            job_ids = [job.job_id for job in jobs]
            self.store.hand_back(job_ids)
            self.metrics.forget(job_ids)
            log.info("jobs handed back to the queue", extra={"job_ids": job_ids, "worker": self.worker_name})
            requeue_current_task()
            raise Reject("the worker is stopping", requeue=True) from None
        except JobRejected as rejected:
            outcomes = [(ErrorEvent(error=rejected.info), JobStatus.FAILED)] * len(jobs)
        except Exception:
            log.exception("job failed", extra={"job_ids": [job.job_id for job in jobs]})
            outcomes = [_internal_error(job.job_id) for job in jobs]
        finally:
            with self._lock:
                self.active -= len(jobs)
        ends = [(job.job_id, event, status) for job, (event, status) in zip(jobs, outcomes, strict=True)]
        self.metrics.job_ended(ends, starts)
        if events:
            self.publisher.finish_many(ends)
        else:  # the end is the delivery's first and only event
            endings = [
                Ending(job, event, status, format_event_id((starts[job].deliveries, 1))) for job, event, status in ends
            ]
            try:
                self.store.finish_many(endings)
            except Exception:  # as the publisher does: logged; the job's record says what happened next
                log.exception("writing job outcomes failed", extra={"job_ids": [e.job_id for e in endings]})

    def _parse(self, payloads: list, job_type: type[Job]) -> list[Job]:
        """The payloads as jobs; one that does not parse fails its job (never hangs it)."""
        jobs = []
        for payload in payloads:
            try:
                jobs.append(job_type.model_validate(payload))
            except ValidationError as invalid:
                job_id = payload.get("job_id") if isinstance(payload, dict) else None
                log.error("malformed job payload", extra={"job_id": job_id, "error": str(invalid)})
                if isinstance(job_id, str):
                    self._fail(job_id, server_error("bad_job", "Unreadable job."))
        return jobs

    def _start(self, jobs: list[Job], events: bool = True) -> tuple[list[Job], dict[str, JobStart]]:
        """The jobs that start now (not finished already, and not delivered too often), and how
        each started (see JobStore.start); with `events`, the publisher numbers their events."""
        starts = self.store.start([job.job_id for job in jobs], self.worker_name, self.settings.max_deliveries)
        starting = []
        for job, start in zip(jobs, starts, strict=True):
            if start.deliveries < 0:
                count = start.deliveries
                log.error("job keeps killing workers; failing it", extra={"job_id": job.job_id, "deliveries": -count})
                message = f"The job was abandoned after {-count - 1} workers died running it."
                self._fail(job.job_id, server_error("worker_lost", message), start)
            elif start.deliveries > 0:
                if events:
                    self.publisher.start(job.job_id, start.deliveries)  # its events are numbered after this delivery
                starting.append(job)
        return starting, {job.job_id: start for job, start in zip(jobs, starts, strict=True)}

    def _fail(self, job_id: str, info: ErrorInfo, start: JobStart | None = None) -> None:
        self.metrics.job_ended([(job_id, ErrorEvent(error=info), JobStatus.FAILED)], {job_id: start} if start else None)
        self.publisher.finish(job_id, ErrorEvent(error=info), JobStatus.FAILED)


def _internal_error(job_id: str) -> Outcome:
    message = f"The worker failed while running job {job_id}."
    return ErrorEvent(error=server_error("internal_error", message)), JobStatus.FAILED
