"""What the fleet looks like now, read from Redis: workers, queue depths, recent jobs, downloads.

The status page streams it (`GET /v1/fleet/events`) and the metrics collector reads the same
figures at scrape time, so both always agree.
"""

from __future__ import annotations

import time

import redis

from api.queue.client import JobClient
from contracts import keys
from contracts.job_store import JobRecord, JobStore
from contracts.jobs import JobKind
from contracts.workers import WorkerInfo

# How long a worker whose heartbeat stopped is still shown (as down) before it is forgotten.
DOWN_SHOWN_S = 600.0


def queue_depths(client: redis.Redis, workers: list[WorkerInfo]) -> dict[str, int]:
    """Messages waiting in each queue a live worker consumes (one round trip)."""
    queues = sorted({queue for w in workers for queue in w.queues})
    pipe = client.pipeline(transaction=False)
    for queue in queues:
        pipe.llen(queue)
    return dict(zip(queues, pipe.execute(), strict=True))


def down_workers(client: redis.Redis, live: list[WorkerInfo]) -> list[str]:
    """Workers that sent a heartbeat in the last DOWN_SHOWN_S seconds but are no longer alive."""
    recent = client.zrangebyscore(keys.WORKERS_INDEX, time.time() - DOWN_SHOWN_S, "+inf")
    alive = {w.name for w in live}
    return sorted(name.decode() for name in recent if name.decode() not in alive)


def job_summary(record: JobRecord) -> dict:
    """A job as the status page lists it (no result: it can be large)."""
    return {
        "id": record.job_id,
        "kind": record.kind,
        "model": record.model,
        "status": record.status.value,
        "created_at": record.created_at,
        "started_at": record.started_at,
        "finished_at": record.finished_at,
        "worker": record.worker,
        "error": record.error.get("message") if record.error else None,
        "progress": record.progress,
    }


def snapshot(jobs: JobClient, store: JobStore, recent: int = 50, viewer: str | None = None) -> dict:
    """Workers (live and recently down), queue depths, the newest jobs and unfinished downloads;
    with a `viewer` (an API key's ID), only the jobs that key may see: its own and shared ones."""
    workers = jobs.live_workers()
    records = [r for r in store.recent(recent) if viewer is None or r.owner in (None, viewer)]
    listed = [job_summary(record) for record in records]
    return {
        "time": time.time(),
        "workers": [w.model_dump(exclude_none=True) for w in sorted(workers, key=lambda w: w.name)],
        "down_workers": down_workers(store.client, workers),
        "queues": queue_depths(store.client, workers),
        "jobs": listed,
        "downloads": [job for job in listed if job["kind"] == JobKind.DOWNLOAD.value],
    }
