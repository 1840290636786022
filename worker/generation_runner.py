"""Runs one chat or completion job on this worker: guards, engine hand-off, and the job's final record."""

from __future__ import annotations

import logging
import threading

from pydantic import ValidationError

from contracts.job_store import JobStore
from contracts.jobs import DoneEvent, ErrorEvent, ErrorInfo, GenerationJob, JobStatus, StartedEvent, cancelled_error
from contracts.settings import Settings
from worker.errors import JobRejected
from worker.event_publisher import EventPublisher
from worker.generation_engine import GenerationEngine
from worker.generation_request import GenerationRequest
from worker.model_registry import ModelRegistry

log = logging.getLogger(__name__)


class GenerationRunner:
    """What a generate task calls; holds the worker's registry, publisher and running jobs."""

    def __init__(
        self, settings: Settings, store: JobStore, registry: ModelRegistry, publisher: EventPublisher, worker_name: str
    ) -> None:
        self.settings = settings
        self.store = store
        self.registry = registry
        self.publisher = publisher
        self.worker_name = worker_name
        self._running: dict[str, GenerationRequest] = {}
        self._lock = threading.Lock()

    def cancel(self, job_id: str) -> None:
        """Stop a running job at its next decode step (called by the cancel listener)."""
        with self._lock:
            request = self._running.get(job_id)
        if request is not None:
            request.cancelled.set()

    def run_payload(self, payload: dict) -> None:
        """Run a task's payload; one that does not parse fails its job instead of hanging it."""
        try:
            job = GenerationJob.model_validate(payload)
        except ValidationError as invalid:
            log.error("malformed job payload", extra={"job_id": payload.get("job_id"), "error": str(invalid)})
            info = ErrorInfo(status=500, type="server_error", code="bad_job", message="The job could not be read.")
            if isinstance(payload.get("job_id"), str):
                self.publisher.finish(payload["job_id"], ErrorEvent(error=info), JobStatus.FAILED)
            return
        self.run(job)

    def run(self, job: GenerationJob) -> None:
        deliveries = self.store.count_delivery(job.job_id)
        if deliveries > self.settings.max_deliveries:
            log.error("job keeps killing workers; failing it", extra={"job_id": job.job_id, "deliveries": deliveries})
            info = ErrorInfo(
                status=500,
                type="server_error",
                code="worker_lost",
                message=f"The job was abandoned after {deliveries - 1} workers died running it.",
            )
            self.publisher.finish(job.job_id, ErrorEvent(error=info), JobStatus.FAILED)
            return
        if not self.store.mark_running(job.job_id, self.worker_name):
            return  # finished before it started (cancelled while queued)
        try:
            loaded = self.registry.get(job.model)
            request = loaded.prepare(job, emit=lambda event: self.publisher.emit(job.job_id, event))
            self.publisher.emit(job.job_id, StartedEvent(worker=self.worker_name))
            self._generate(loaded.engine, request)
        except JobRejected as rejected:
            self.publisher.finish(job.job_id, ErrorEvent(error=rejected.info), JobStatus.FAILED)
        except Exception:
            log.exception("job failed", extra={"job_id": job.job_id})
            info = ErrorInfo(
                status=500,
                type="server_error",
                code="internal_error",
                message=f"The worker failed while running job {job.job_id}.",
            )
            self.publisher.finish(job.job_id, ErrorEvent(error=info), JobStatus.FAILED)

    def _generate(self, engine: GenerationEngine, request: GenerationRequest) -> None:
        job_id = request.job_id
        with self._lock:
            self._running[job_id] = request
        try:
            if self.store.is_cancel_requested(job_id):
                request.cancelled.set()
            engine.submit(request)
            request.finished.wait()
        finally:
            with self._lock:
                self._running.pop(job_id, None)
        if request.error is not None:
            raise request.error
        if request.cancelled.is_set():
            self.publisher.finish(job_id, ErrorEvent(error=cancelled_error()), JobStatus.CANCELLED)
        else:
            self.publisher.finish(job_id, DoneEvent(result=request.result), JobStatus.SUCCEEDED)
