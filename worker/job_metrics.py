"""Records each finished job's latencies, tokens and status into the fleet metrics in Redis.

The decode loop only notes, in memory, when a job's first token came (`first_token`); all of a
task's observations go to Redis in one pipeline as its jobs end, just before their terminal
events are written (so a client that has its answer finds it counted), at a cost of two round
trips per task (read the jobs' records, write the observations), never one per token.
"""

from __future__ import annotations

import logging
import threading
import time

import redis

from contracts import fleet_metrics, keys
from contracts.jobs import DoneEvent, ErrorEvent, GenerationResult, JobStatus

log = logging.getLogger(__name__)


class JobMetrics:
    """Observes job ends for this worker; does nothing when metrics are off."""

    def __init__(self, client: redis.Redis, enabled: bool = True) -> None:
        self.client = client
        self.enabled = enabled
        self._first_tokens: dict[str, float] = {}
        self._lock = threading.Lock()

    def first_token(self, job_id: str) -> None:
        """Note the time of a job's first generated token (later calls for the job are ignored)."""
        if self.enabled and job_id not in self._first_tokens:
            with self._lock:
                self._first_tokens.setdefault(job_id, time.time())

    def job_ended(self, ends: list[tuple[str, DoneEvent | ErrorEvent, JobStatus]]) -> None:
        """Observe jobs ending now: (job ID, terminal event, status) each; kind, model, creation
        and start come from the job records."""
        with self._lock:
            first_tokens = {job_id: self._first_tokens.pop(job_id, None) for job_id, *_ in ends}
        if not self.enabled or not ends:
            return
        try:
            records = self._records([job_id for job_id, *_ in ends])
            pipe = self.client.pipeline(transaction=False)
            finished = time.time()
            for (job_id, event, status), (kind, model, created, started) in zip(ends, records, strict=True):
                fleet_metrics.observe(pipe, fleet_metrics.JOBS, (model, kind, status.value), 1)
                if created is None:
                    continue
                fleet_metrics.observe(pipe, fleet_metrics.END_TO_END, (model, kind), max(0.0, finished - created))
                if started is not None:
                    fleet_metrics.observe(pipe, fleet_metrics.QUEUE_TIME, (model, kind), max(0.0, started - created))
                result = event.result if isinstance(event, DoneEvent) else None
                if isinstance(result, GenerationResult):
                    self._generation(pipe, model, result, created, first_tokens[job_id], finished)
            pipe.execute()
        except Exception:  # figures must never keep a job from ending
            log.warning("recording job metrics failed", exc_info=True, extra={"jobs": len(ends)})

    def _records(self, job_ids: list[str]) -> list[tuple]:
        """(kind, model, created, started) of each job, as recorded."""
        pipe = self.client.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hmget(keys.job_key(job_id), "kind", "model", "created_at", "started_at")
        return [
            (kind.decode() if kind else "", model.decode() if model else "", *(float(t) if t else None for t in times))
            for kind, model, *times in pipe.execute()
        ]

    @staticmethod
    def _generation(pipe, model: str, result: GenerationResult, created: float, first: float | None, end: float):
        usage = result.usage
        fleet_metrics.observe(pipe, fleet_metrics.PROMPT_TOKENS, (model,), usage.prompt_tokens)
        fleet_metrics.observe(pipe, fleet_metrics.GENERATION_TOKENS, (model,), usage.completion_tokens)
        cached = usage.prompt_tokens_details.cached_tokens if usage.prompt_tokens_details else 0
        fleet_metrics.observe(pipe, fleet_metrics.CACHED_TOKENS, (model,), cached)
        if first is None:
            return
        fleet_metrics.observe(pipe, fleet_metrics.TIME_TO_FIRST_TOKEN, (model,), max(0.0, first - created))
        choices = max(1, len(result.choices))
        per_choice = usage.completion_tokens / choices  # choices decode side by side
        if per_choice > 1:
            fleet_metrics.observe(pipe, fleet_metrics.TIME_PER_OUTPUT_TOKEN, (model,), (end - first) / (per_choice - 1))
