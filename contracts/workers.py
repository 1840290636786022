"""What a live worker advertises, and where workers publish it and the API reads it.

A worker's heartbeat writes its `WorkerInfo` as JSON under an expiring key (three heartbeat
periods) and scores its name in a sorted set by the time of that beat, so the API finds live
workers without scanning keys. Compute workers also record their device queue ("home"), where
jobs left in a dead worker's own queue are moved (worker/runtime/orphaned_jobs.py).
"""

from __future__ import annotations

import logging
import time

import pydantic
import redis
from pydantic import BaseModel

from contracts import keys

log = logging.getLogger(__name__)

# Names whose last beat is older than this are dropped from the index when the API reads it.
FORGET_AFTER_S = 3600
# Only names that beat this recently are read at all (a live worker beats every few seconds).
RECENT_S = 60


class LoadedModelInfo(BaseModel):
    """A model a worker holds: its TTL (None: kept until unloaded) and estimated memory."""

    name: str
    ttl_s: float | None = None
    footprint_mb: float = 0.0
    # A decoder's engine figures (None for embedding models, whose engine has none): rows decoding
    # now, key/value cache slots and bytes, prefix-cache hits since the model loaded.
    rows_in_use: int | None = None
    kv_slots: int | None = None
    kv_slots_in_use: int | None = None
    kv_bytes: int | None = None
    prefix_cache_hits: int | None = None
    prefix_cache_hit_tokens: int | None = None
    # A decoder's memory plan (worker/models/memory_plan.py): the tokens one sequence's key/value
    # cache holds, and the whole plan (slots, kv_tokens, prefix_tokens, sizes in MB, budget_mb).
    kv_capacity_tokens: int | None = None
    memory_plan: dict | None = None


class WorkerInfo(BaseModel):
    """One worker as its last heartbeat described it."""

    name: str
    pid: int
    seen_at: float
    device: str
    lane: str
    queues: list[str]
    execution_providers: list[str]
    loaded_models: list[LoadedModelInfo] = []
    # Jobs the worker admits at once (LADLE_WORKER_CONCURRENCY) and how many it is running.
    capacity: int
    active_jobs: int = 0
    # Sequences one model's decode loop steps together (LADLE_MAX_BATCH).
    batch_rows: int = 1
    # Bytes a downloads worker has fetched since it started.
    downloaded_bytes: int = 0

    @property
    def loaded_model_names(self) -> set[str]:
        return {model.name for model in self.loaded_models}


def publish(client: redis.Redis | redis.client.Pipeline, info: WorkerInfo, ttl_s: float) -> None:
    """Advertise `info` for `ttl_s` seconds and index the worker by the time of this beat."""
    client.set(keys.worker_key(info.name), info.model_dump_json(), px=int(ttl_s * 1000))
    client.zadd(keys.WORKERS_INDEX, {info.name: info.seen_at})


def withdraw(client: redis.Redis | redis.client.Pipeline, name: str) -> None:
    """Stop advertising the worker (its index entry stays, so its own queue is still found)."""
    client.delete(keys.worker_key(name))


def live(client: redis.Redis) -> list[WorkerInfo]:
    """Workers whose heartbeat has not expired (names silent for an hour leave the index)."""
    now = time.time()
    pipe = client.pipeline(transaction=False)  # two independent commands: no MULTI/EXEC around them
    pipe.zremrangebyscore(keys.WORKERS_INDEX, "-inf", now - FORGET_AFTER_S)
    pipe.zrangebyscore(keys.WORKERS_INDEX, now - RECENT_S, "+inf")
    names = pipe.execute()[1]
    if not names:
        return []
    workers = []
    for raw in client.mget([keys.worker_key(name.decode()) for name in names]):
        if not raw:
            continue
        try:
            workers.append(WorkerInfo.model_validate_json(raw))
        except pydantic.ValidationError as error:
            # A worker of another version may describe itself differently; it is not routed to.
            log.warning("unreadable worker heartbeat", extra={"error": str(error)})
    return workers


def is_alive(client: redis.Redis, name: str) -> bool:
    return bool(client.exists(keys.worker_key(name)))


def last_seen(client: redis.Redis, name: str) -> float:
    """Time of the worker's last beat (0 if it was never seen)."""
    return client.zscore(keys.WORKERS_INDEX, name) or 0.0


def register_home(client: redis.Redis, worker_name: str, device_queue: str) -> None:
    """Record the device queue of a compute worker (where its orphaned jobs go)."""
    client.hset(keys.WORKER_HOMES, worker_name, device_queue)


def homes(client: redis.Redis) -> dict[str, str]:
    """Every recorded compute worker and its device queue."""
    return {name.decode(): home.decode() for name, home in client.hgetall(keys.WORKER_HOMES).items()}


def forget_home(client: redis.Redis, worker_name: str) -> None:
    client.hdel(keys.WORKER_HOMES, worker_name)
