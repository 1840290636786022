"""A worker's heartbeat: advertising itself and renewing the leases of the jobs it holds."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

import redis
from celery.worker import state as celery_state

from contracts import workers
from contracts.celery_config import UNACKED_INDEX_KEY
from contracts.workers import WorkerInfo
from worker.runtime.fleet_clock import CLOCK

log = logging.getLogger(__name__)

# A beat that takes this many intervals is logged: leases may have run out meanwhile.
LATE_FACTOR = 4


class Heartbeat:
    """Every few seconds: advertise this worker, and renew the lease of its jobs.

    Renewing the delivery time of the messages this worker holds means a long job is never
    handed to another worker while this one is alive; once it dies, the lease runs out after
    the visibility timeout and the broker delivers the job again.
    """

    def __init__(
        self,
        client: redis.Redis,
        name: str,
        interval_s: float,
        describe: Callable[[], dict],
        on_beat: Callable[[], object],
    ) -> None:
        self.client = client
        self.name = name
        self.interval_s = interval_s
        self.describe = describe
        self.on_beat = on_beat
        self._stop = threading.Event()
        self._withdrawn = False
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def start(self) -> None:
        self.beat()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        # The index keeps the name (with its last beat) so jobs the broker hands back to this
        # worker's own queue after it stopped are still found and requeued (orphaned_jobs).
        workers.withdraw(self.client, self.name)

    def withdraw(self) -> None:
        """Stop advertising this worker (it is draining) but keep renewing its leases.

        Without its key, the API routes no more jobs to it, and the other workers move what
        waits in its own queue (including jobs it hands back) to the device queue.
        """
        self._withdrawn = True
        workers.withdraw(self.client, self.name)

    def beat(self) -> None:
        CLOCK.sync(self.client)  # leases are renewed, and deliveries judged, by Redis's clock
        info = WorkerInfo(name=self.name, pid=os.getpid(), seen_at=CLOCK.now(), **self.describe())
        pipe = self.client.pipeline(transaction=False)
        if self._withdrawn:
            workers.withdraw(pipe, self.name)  # in case a beat under way as it withdrew set it again
        else:
            workers.publish(pipe, info, ttl_s=self.interval_s * 3)
        held = {r.message.delivery_tag for r in list(celery_state.reserved_requests) if r.message is not None}
        if held:
            pipe.zadd(UNACKED_INDEX_KEY, dict.fromkeys(held, CLOCK.now()), xx=True)
        pipe.execute()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            started = time.monotonic()
            try:
                self.beat()
                beat_s = time.monotonic() - started
                self.on_beat()
            except redis.RedisError:
                log.warning("heartbeat failed", exc_info=True)
                continue
            took_s = time.monotonic() - started
            if took_s > LATE_FACTOR * self.interval_s:
                log.warning(
                    "heartbeat late: %.1f s, %.1f s of it renewing leases",
                    took_s,
                    beat_s,
                    extra={"beat_s": round(beat_s, 3), "took_s": round(took_s, 3)},
                )
