"""Jobs routed to a worker's own queue (model affinity) must not die with that worker.

Every compute worker records its device queue (its home, contracts/workers.py) when it
starts. On each beat, each compute worker moves whatever waits in the own queue of a worker whose
heartbeat has expired back to that worker's device queue, where any worker of the device takes it
(workers of the other lanes leave it to them: neither queue is theirs). That includes jobs the
broker hands back after a dead worker's lease ran out (they return to the queue they came from).
A dead worker is forgotten once its queue is empty and it has been silent for `forget_after_s`.
"""

from __future__ import annotations

import logging

import redis

from contracts import workers
from contracts.queues import queue_for_worker
from worker.runtime.fleet_clock import CLOCK

log = logging.getLogger(__name__)


def requeue_orphaned_jobs(client: redis.Redis, forget_after_s: float) -> int:
    """Move jobs out of dead workers' own queues; returns how many moved."""
    moved = 0
    for name, home in workers.homes(client).items():
        if workers.is_alive(client, name):
            continue
        own = queue_for_worker(name)
        while client.lmove(own, home, "RIGHT", "LEFT") is not None:
            moved += 1
        if CLOCK.now() - workers.last_seen(client, name) > forget_after_s and not client.llen(own):
            workers.forget_home(client, name)
    if moved:
        log.warning("requeued jobs of dead workers", extra={"jobs": moved})
    return moved
