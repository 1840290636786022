"""Workers publish their WorkerInfo to Redis and the API reads the live ones back."""

from __future__ import annotations

import time
import uuid

import pytest
import redis

from contracts import keys, workers
from contracts.workers import LoadedModelInfo, WorkerInfo


@pytest.fixture
def client(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


def info(name: str) -> WorkerInfo:
    return WorkerInfo(
        name=name,
        pid=123,
        seen_at=time.time(),
        device="cpu",
        lane="compute",
        queues=["ladle.device.cpu", f"ladle.worker.{name}"],
        execution_providers=["cpu"],
        loaded_models=[LoadedModelInfo(name="m", ttl_s=600.0, footprint_mb=1.5)],
        capacity=16,
        active_jobs=2,
        batch_rows=8,
    )


def test_a_published_worker_is_read_back_as_it_was_published(client):
    published = info(f"w-{uuid.uuid4().hex}")
    workers.publish(client, published, ttl_s=5)
    assert published in workers.live(client)


def test_a_withdrawn_worker_is_no_longer_live_but_stays_indexed(client):
    published = info(f"w-{uuid.uuid4().hex}")
    workers.publish(client, published, ttl_s=5)
    workers.withdraw(client, published.name)
    assert published.name not in {w.name for w in workers.live(client)}
    assert workers.last_seen(client, published.name) == pytest.approx(published.seen_at)


def test_an_unreadable_heartbeat_is_skipped(client):
    name = f"w-{uuid.uuid4().hex}"
    client.set(keys.worker_key(name), '{"name": "half a worker"}', px=5000)
    client.zadd(keys.WORKERS_INDEX, {name: time.time()})
    assert name not in {w.name for w in workers.live(client)}


def test_a_home_is_recorded_and_forgotten(client):
    name = f"w-{uuid.uuid4().hex}"
    workers.register_home(client, name, "ladle.device.cpu")
    assert workers.homes(client)[name] == "ladle.device.cpu"
    workers.forget_home(client, name)
    assert name not in workers.homes(client)
