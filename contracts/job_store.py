"""Ladle's own job records and event streams in Redis (Celery's result backend is not used).

A job's events are appended to a Redis Stream and announced on a pub/sub channel by one Lua
script, so both happen atomically. Finishing is guarded by HSETNX on `finished_at`: exactly one
writer (worker or API) emits the terminal event.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import redis

from contracts import keys
from contracts.jobs import DoneEvent, DownloadProgress, ErrorEvent, JobEvent, JobKind, JobStatus, ProgressEvent

_EMIT = """
if ARGV[3] == '1' then
  if ARGV[8] and redis.call('HGET', KEYS[1], 'status') ~= ARGV[8] then return false end
  if redis.call('HSETNX', KEYS[1], 'finished_at', ARGV[5]) == 0 then return false end
  redis.call('HSET', KEYS[1], 'status', ARGV[4], ARGV[6], ARGV[7])
end
local id = redis.call('XADD', KEYS[2], '*', 'event', ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('PUBLISH', KEYS[3], id .. '\\n' .. ARGV[1])
return id
"""

# Start a delivered job: count the delivery; past ARGV[3] deliveries return minus the count
# (the job keeps killing workers), 0 if the job already finished (cancelled while queued), else
# mark it running and return the count.
_START = """
local deliveries = redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[4])
if deliveries > tonumber(ARGV[3]) then return -deliveries end
if redis.call('HEXISTS', KEYS[1], 'finished_at') == 1 then return 0 end
redis.call('HSET', KEYS[1], 'status', 'running', 'started_at', ARGV[1], 'worker', ARGV[2])
return deliveries
"""


# Claim a shared job (e.g. one download per model folder): the job already holding KEYS[1] if it
# is still unfinished, else ARGV[1] (which then holds the key).
_CLAIM_SHARED = """
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[1] then
  local record = ARGV[3] .. current
  if redis.call('EXISTS', record) == 1 and redis.call('HEXISTS', record, 'finished_at') == 0 then
    return current
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return ARGV[1]
"""


@dataclass(frozen=True)
class JobRecord:
    """A job as stored: what `GET /v1/jobs/{id}` shows."""

    job_id: str
    kind: str
    model: str
    status: JobStatus
    created_at: float
    started_at: float | None
    finished_at: float | None
    worker: str | None
    result: dict | None
    error: dict | None
    # Long jobs (downloads): the latest progress report.
    progress: dict | None = None

    @classmethod
    def from_hash(cls, job_id: str, fields: dict[str, str]) -> JobRecord:
        def number(name: str) -> float | None:
            return float(fields[name]) if name in fields else None

        def document(name: str) -> dict | None:
            return json.loads(fields[name]) if name in fields else None

        return cls(
            job_id=job_id,
            kind=fields.get("kind", ""),
            model=fields.get("model", ""),
            status=JobStatus(fields.get("status", "queued")),
            created_at=float(fields.get("created_at", 0)),
            started_at=number("started_at"),
            finished_at=number("finished_at"),
            worker=fields.get("worker"),
            result=document("result"),
            error=document("error"),
            progress=document("progress"),
        )


def parse_stream_id(stream_id: str) -> tuple[int, int]:
    """Order of a stream entry ID ("ms-seq"), for comparing IDs from replay and live feed."""
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


class JobStore:
    """Reads and writes job records and events; shared by the API and the workers."""

    def __init__(self, client: redis.Redis, ttl_s: int) -> None:
        self.client = client
        self.ttl_s = ttl_s
        self._emit = client.register_script(_EMIT)
        self._start = client.register_script(_START)
        self._claim_shared = client.register_script(_CLAIM_SHARED)

    def create(self, job_ids: list[str], kind: JobKind, model: str, task_id: str | None = None) -> None:
        """Record queued jobs (one round trip for all), sent in the Celery task `task_id` (default: the job's ID)."""
        pipe = self.client.pipeline()
        now = time.time()
        for job_id in job_ids:
            record = {
                "kind": kind.value,
                "model": model,
                "status": "queued",
                "created_at": now,
                "task": task_id or job_id,
            }
            pipe.hset(keys.job_key(job_id), mapping=record)
            pipe.expire(keys.job_key(job_id), self.ttl_s)
        pipe.zadd(keys.RECENT_JOBS, dict.fromkeys(job_ids, now))
        pipe.zremrangebyrank(keys.RECENT_JOBS, 0, -keys.RECENT_JOBS_LIMIT - 1)  # keep the newest only
        pipe.execute()

    def claim_shared(self, share_key: str, job_id: str) -> str:
        """The unfinished job holding `share_key`, or `job_id` after it took the key."""
        owner = self._claim_shared(keys=[share_key], args=[job_id, self.ttl_s, keys.job_key("")])
        return _text(owner)

    def recent(self, limit: int) -> list[JobRecord]:
        """The newest `limit` jobs still on record, newest first (two round trips)."""
        ids = [_text(i) for i in self.client.zrevrange(keys.RECENT_JOBS, 0, limit - 1)]
        pipe = self.client.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(keys.job_key(job_id), *_LISTED_FIELDS)
        records = []
        for job_id, values in zip(ids, pipe.execute(), strict=True):
            fields = {name: _text(v) for name, v in zip(_LISTED_FIELDS, values, strict=True) if v is not None}
            if fields:
                records.append(JobRecord.from_hash(job_id, fields))
        return records

    def delete(self, job_id: str) -> None:
        self.client.delete(keys.job_key(job_id))

    def get(self, job_id: str) -> JobRecord | None:
        fields = self.client.hgetall(keys.job_key(job_id))
        return JobRecord.from_hash(job_id, _decode(fields)) if fields else None

    def start(self, job_ids: list[str], worker: str, max_deliveries: int) -> list[int]:
        """Count a delivery of each job and mark it running (one round trip for all).

        For each job: its delivery count once it is running; 0 if it had already finished (e.g.
        cancelled while queued); minus the count when it was delivered more than `max_deliveries` times.
        """
        pipe = self.client.pipeline(transaction=False)
        for job_id in job_ids:
            self._start(
                keys=[keys.job_key(job_id), keys.job_deliveries_key(job_id)],
                args=[time.time(), worker, max_deliveries, self.ttl_s],
                client=pipe,
            )
        return [int(n) for n in pipe.execute()]

    def emit(self, job_id: str, event: JobEvent, client: redis.Redis | None = None) -> None:
        """Append a non-terminal event (pass a pipeline as `client` to batch writes)."""
        self._emit(keys=_event_keys(job_id), args=[event.model_dump_json(), self.ttl_s, "0"], client=client)

    def report_progress(self, job_id: str, progress: DownloadProgress) -> None:
        """Keep the latest progress in the job record and emit it as an event."""
        pipe = self.client.pipeline()
        pipe.hset(keys.job_key(job_id), "progress", progress.model_dump_json())
        self.emit(job_id, ProgressEvent(progress=progress), client=pipe)
        pipe.execute()

    def finish(
        self,
        job_id: str,
        event: DoneEvent | ErrorEvent,
        status: JobStatus,
        client=None,
        only_if: JobStatus | None = None,
    ):
        """Record the outcome and emit the terminal event unless another writer finished first
        (or, with `only_if`, unless the job has left that status: a worker started it meanwhile).

        Returns the stream ID, or None when nothing was written (via a pipeline: the pipeline's
        result holds it).
        """
        field, document = ("result", event.result) if isinstance(event, DoneEvent) else ("error", event.error)
        args = [event.model_dump_json(), self.ttl_s, "1", status.value, time.time(), field, document.model_dump_json()]
        if only_if is not None:
            args.append(only_if.value)
        return self._emit(keys=_event_keys(job_id), args=args, client=client)

    def events_after(self, job_id: str, after: str | None) -> list[tuple[str, str]]:
        """Stored events (stream ID, JSON) after `after` (exclusive), oldest first."""
        start = f"({after}" if after else "-"
        return [(_text(i), _text(f[b"event"])) for i, f in self.client.xrange(keys.job_events_key(job_id), start, "+")]

    def request_cancel(self, job_id: str) -> None:
        pipe = self.client.pipeline()
        pipe.set(keys.job_cancel_key(job_id), 1, ex=self.ttl_s)
        pipe.publish(keys.CANCEL_CHANNEL, job_id)
        pipe.execute()

    def is_cancel_requested(self, job_id: str) -> bool:
        return bool(self.client.exists(keys.job_cancel_key(job_id)))


# What a listing of jobs shows (results stay out: they can be large).
_LISTED_FIELDS = ("kind", "model", "status", "created_at", "started_at", "finished_at", "worker", "progress", "error")


def _event_keys(job_id: str) -> list[str]:
    return [keys.job_key(job_id), keys.job_events_key(job_id), keys.job_channel(job_id)]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _decode(fields: dict) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in fields.items()}
