"""The fleet's one clock: Redis's, so a worker whose own clock is wrong or steps (a bad NTP sync, a
VM resumed) still judges deliveries and leases as every other worker does.

kombu stamps each delivery in its unacked index with its worker's `time()` and hands a delivery out
again once it is older than the visibility timeout by the sweeping worker's `time()`; the heartbeat
renews leases the same way. With clocks apart, a worker whose clock runs ahead takes every other
worker's jobs for expired and delivers them again. Here the time is Redis's `TIME`, read once per
heartbeat and carried between reads by this process's monotonic clock (which no wall-clock step
moves): no round trip per delivery, and exact to within half a `TIME` round trip. A read whose
round trip took longer than MAX_SYNC_ROUND_TRIP_S (a partition held the command or its answer) is
not used once the clock has a good one: taking its midpoint put a worker healed from a 12 s
partition 6 s ahead, and it handed out every job in the fleet again.
"""

from __future__ import annotations

import threading
import time

import redis
from kombu.transport import redis as kombu_redis

# A TIME read slower than this says more about the network than about Redis's clock.
MAX_SYNC_ROUND_TRIP_S = 1.0


class FleetClock:
    """Seconds since the epoch by Redis's clock (this process's own until the first sync)."""

    def __init__(self) -> None:
        self._offset: float | None = None  # Redis's time minus this process's monotonic clock
        self._lock = threading.Lock()

    def sync(self, client: redis.Redis) -> None:
        """Read Redis's clock (one TIME command)."""
        before = time.monotonic()
        seconds, microseconds = client.time()
        after = time.monotonic()
        with self._lock:
            if self._offset is not None and after - before > MAX_SYNC_ROUND_TRIP_S:
                return  # the monotonic clock carries the last good read
            self._offset = seconds + microseconds / 1e6 - (before + after) / 2

    def now(self) -> float:
        offset = self._offset
        return time.time() if offset is None else time.monotonic() + offset


CLOCK = FleetClock()


def use_for_kombu() -> None:
    """kombu's Redis transport (plain and Sentinel) stamps and sweeps deliveries by the fleet's clock."""
    kombu_redis.time = CLOCK.now
