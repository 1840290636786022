"""Records each finished job's latencies, tokens and status into the fleet metrics in Redis.

The decode loop only notes, in memory, when a job's first token came (`first_token`). As a
task's jobs end, their observations are added up in memory from what starting them returned
(kind, model, creation and start: see JobStore.start; a job that never started is read from its
record); `flush`, called on every heartbeat and at shutdown, writes the totals in one pipeline.
So a job reaches /metrics within one heartbeat of its end, and the Redis commands spent on
metrics follow the number of label sets per heartbeat rather than the number of jobs.
"""

from __future__ import annotations

import logging
import threading
import time

import redis

from contracts import fleet_metrics, keys
from contracts.events import DoneEvent, ErrorEvent, GenerationResult
from contracts.job_store import JobStart
from contracts.jobs import JobStatus

log = logging.getLogger(__name__)

# Fields held while Redis refuses the writes; beyond it the oldest totals are dropped. The
# fields are one per label set and bucket, so only an unusual number of models comes near it.
_MAX_PENDING_FIELDS = 10_000


class JobMetrics:
    """Observes job ends for this worker; does nothing when metrics are off."""

    def __init__(self, client: redis.Redis, enabled: bool = True) -> None:
        self.client = client
        self.enabled = enabled
        self._first_tokens: dict[str, float] = {}
        self._pending: fleet_metrics.Tally = {}  # observed, not yet written to Redis
        self._lock = threading.Lock()

    def first_token(self, job_id: str) -> None:
        """Note the time of a job's first generated token (later calls for the job are ignored)."""
        if self.enabled and job_id not in self._first_tokens:
            with self._lock:
                self._first_tokens.setdefault(job_id, time.time())

    def job_ended(
        self, ends: list[tuple[str, DoneEvent | ErrorEvent, JobStatus]], starts: dict[str, JobStart] | None = None
    ) -> None:
        """Observe jobs ending now: (job ID, terminal event, status) each. Kind, model, creation and
        start come from `starts` (by job ID); those of jobs not in it are read from their records."""
        with self._lock:
            first_tokens = {job_id: self._first_tokens.pop(job_id, None) for job_id, *_ in ends}
        if not self.enabled or not ends:
            return
        try:
            starts = starts or {}
            unknown = [job_id for job_id, *_ in ends if job_id not in starts]
            records = {**dict(zip(unknown, self._records(unknown), strict=True)), **starts} if unknown else starts
            tally: fleet_metrics.Tally = {}
            finished = time.time()
            for job_id, event, status in ends:
                record = records[job_id]
                model, kind, created, started = record.model, record.kind, record.created_at, record.started_at
                fleet_metrics.add(tally, fleet_metrics.JOBS, (model, kind, status.value), 1)
                if created is None:
                    continue
                fleet_metrics.add(tally, fleet_metrics.END_TO_END, (model, kind), max(0.0, finished - created))
                if started is not None:
                    fleet_metrics.add(tally, fleet_metrics.QUEUE_TIME, (model, kind), max(0.0, started - created))
                result = event.result if isinstance(event, DoneEvent) else None
                if isinstance(result, GenerationResult):
                    self._generation(tally, model, result, created, first_tokens[job_id], finished)
            self._keep(tally)
        except Exception:  # figures must never keep a job from ending
            log.warning("recording job metrics failed", exc_info=True, extra={"jobs": len(ends)})

    def forget(self, job_ids: list[str]) -> None:
        """Drop what was noted of jobs leaving this worker unfinished (handed back to the queue)."""
        with self._lock:
            for job_id in job_ids:
                self._first_tokens.pop(job_id, None)

    def flush(self) -> None:
        """Write the totals observed since the last flush in one transaction; on failure keep them
        for the next one (never raises)."""
        with self._lock:
            tally, self._pending = self._pending, {}
        if not tally:
            return
        try:
            pipe = self.client.pipeline(transaction=True)  # a scrape sees all of a flush or none
            fleet_metrics.write(pipe, tally)
            pipe.execute()
        except redis.ResponseError:  # Redis refused a field's value: retrying would be refused again
            log.warning("writing job metrics refused; dropping them", exc_info=True, extra={"fields": len(tally)})
        except Exception:
            log.warning("writing job metrics failed; keeping them", exc_info=True, extra={"fields": len(tally)})
            self._keep(tally)

    def _keep(self, tally: fleet_metrics.Tally) -> None:
        """Add `tally` to the totals waiting for the next flush (bounded)."""
        with self._lock:
            for field, amount in tally.items():
                self._pending[field] = self._pending.get(field, 0) + amount
            excess = len(self._pending) - _MAX_PENDING_FIELDS
            if excess > 0:
                for field in list(self._pending)[:excess]:
                    del self._pending[field]
                log.warning("dropped unwritten job metrics", extra={"fields": excess})

    def _records(self, job_ids: list[str]) -> list[JobStart]:
        """Kind, model, creation and start of each job, as recorded (one round trip)."""
        pipe = self.client.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hmget(keys.job_key(job_id), "kind", "model", "created_at", "started_at")
        return [
            JobStart(
                0,
                kind.decode() if kind else "",
                model.decode() if model else "",
                *(float(t) if t else None for t in times),
            )
            for kind, model, *times in pipe.execute()
        ]

    @staticmethod
    def _generation(
        tally: fleet_metrics.Tally,
        model: str,
        result: GenerationResult,
        created: float,
        first: float | None,
        end: float,
    ) -> None:
        usage = result.usage
        fleet_metrics.add(tally, fleet_metrics.PROMPT_TOKENS, (model,), usage.prompt_tokens)
        fleet_metrics.add(tally, fleet_metrics.GENERATION_TOKENS, (model,), usage.completion_tokens)
        cached = usage.prompt_tokens_details.cached_tokens if usage.prompt_tokens_details else 0
        fleet_metrics.add(tally, fleet_metrics.CACHED_TOKENS, (model,), cached)
        if first is None:
            return
        fleet_metrics.add(tally, fleet_metrics.TIME_TO_FIRST_TOKEN, (model,), max(0.0, first - created))
        choices = max(1, len(result.choices))
        per_choice = usage.completion_tokens / choices  # choices decode side by side
        if per_choice > 1:
            fleet_metrics.add(tally, fleet_metrics.TIME_PER_OUTPUT_TOKEN, (model,), (end - first) / (per_choice - 1))
