"""The work of a chat or completion job: prepare, hand to the model's decode loop, wait."""

from __future__ import annotations

import threading

from contracts.errors import job_cancelled
from contracts.events import DoneEvent, ErrorEvent, StartedEvent
from contracts.jobs import GenerationJob, JobStatus
from worker.models.model_registry import ModelRegistry
from worker.runtime.drain import HandedBack
from worker.runtime.event_publisher import EventPublisher
from worker.runtime.job_metrics import JobMetrics
from worker.runtime.job_runner import Outcome


class GenerationRunner:
    """Generates for jobs, stops running ones on request (cancel listener), hands them back when draining."""

    def __init__(
        self,
        registry: ModelRegistry,
        publisher: EventPublisher,
        worker_name: str,
        store,
        metrics: JobMetrics | None = None,
    ) -> None:
        self.registry = registry
        self.publisher = publisher
        self.worker_name = worker_name
        self.store = store
        self.metrics = metrics
        # Each running job's cancel flags: one per delivery running it here (a message delivered
        # again while the job runs joins the running request; see ContinuousBatchEngine).
        self._running: dict[str, list[threading.Event]] = {}
        self._handed_back: set[str] = set()
        self._draining = False
        self._lock = threading.Lock()

    def cancel(self, job_id: str) -> None:
        """Stop a running job at its next decode step."""
        with self._lock:
            flags = list(self._running.get(job_id, ()))
        for cancelled in flags:
            cancelled.set()

    def drain(self) -> None:
        """The worker is stopping: jobs not decoding yet are handed back now; running ones go on."""
        with self._lock:
            self._draining = True
        # Engines loaded before the flag was set hold every request registered before it.
        for engine in self.registry.generation_engines():
            engine.hand_back_waiting()

    def hand_back_running(self) -> list[str]:
        """The drain time is over: stop the running jobs at their next step and hand them back."""
        with self._lock:
            self._handed_back.update(self._running)
            running = {job_id: list(flags) for job_id, flags in self._running.items()}
        for flags in running.values():
            for stop in flags:
                stop.set()
        return list(running)

    def _emitter(self, job_id: str):
        """What the decode loop calls with each event: publish it (and note the first token's time)."""
        if self.metrics is None or not self.metrics.enabled:
            return lambda event: self.publisher.emit(job_id, event)
        first_token = self.metrics.first_token

        def emit(event) -> None:
            first_token(job_id)
            self.publisher.emit(job_id, event)

        return emit

    def generate(self, job: GenerationJob) -> Outcome:
        with self.registry.in_use(job.model):
            return self._generate(job)

    def _generate(self, job: GenerationJob) -> Outcome:
        loaded = self.registry.get(job.model)
        request = loaded.prepare(job, emit=self._emitter(job.job_id))
        with self._lock:
            if self._draining:
                raise HandedBack(job.job_id)
            self._running.setdefault(job.job_id, []).append(request.cancelled)
        try:
            self.publisher.emit(job.job_id, StartedEvent(worker=self.worker_name))
            if self.store.is_cancel_requested(job.job_id):
                request.cancelled.set()
            loaded.engine.submit(request)
            request.finished.wait()
        finally:
            with self._lock:
                flags = self._running[job.job_id]
                flags.remove(request.cancelled)
                handed_back = job.job_id in self._handed_back
                if not flags:  # the last delivery running it here: every one saw the hand-back
                    del self._running[job.job_id]
                    self._handed_back.discard(job.job_id)
        if request.error is not None:
            raise request.error
        if handed_back and not self.store.is_cancel_requested(job.job_id):
            raise HandedBack(job.job_id)
        if request.cancelled.is_set():
            return ErrorEvent(error=job_cancelled()), JobStatus.CANCELLED
        return DoneEvent(result=request.result), JobStatus.SUCCEEDED
