"""`ladle health worker`: whether a worker on this host is alive (a container healthcheck)."""

from __future__ import annotations

import json
import socket

import redis

from contracts import keys
from contracts.settings import Settings


def live_local_workers(settings: Settings, lane: str | None = None) -> list[dict]:
    """Heartbeats of the workers on this host (of `lane`, if given) that have not expired.

    A worker's heartbeat expires three periods after its last beat, so a present key is a fresh
    one; the worker name ends with @<hostname>, which in a container is the container's own.
    """
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
    suffix = f"@{socket.gethostname()}"
    names = [name.decode() for name in client.zrange(keys.WORKERS_INDEX, 0, -1)]
    local = [name for name in names if name.endswith(suffix)]
    beats = [json.loads(raw) for raw in (client.mget([keys.worker_key(n) for n in local]) if local else []) if raw]
    return [beat for beat in beats if lane is None or beat.get("lane") == lane]


def worker_health(settings: Settings, lane: str | None) -> int:
    """0 when a worker of this host (and lane) has a fresh heartbeat, else 1 (also when Redis is down)."""
    try:
        return 0 if live_local_workers(settings, lane) else 1
    except redis.RedisError:
        return 1
